"""KV blending: reuse cached KV of text that repeats anywhere in a prompt.

Prefix caching only helps when a prompt starts like an earlier one. Here each
segment (a passage, a document, a tool result) is cached on its own, as if it
stood at position 0, and reused wherever it appears: its keys are turned to
the new positions and the few tokens whose KV suffers most from having missed
the text before them are recomputed (the CacheBlend method).
"""

from __future__ import annotations

from lmcache.blend.hf import BlendOutput, SegmentKV, blend_prefill, segment_kv
from lmcache.blend.rope import rerotate_keys

__all__ = ["BlendOutput", "SegmentKV", "blend_prefill", "rerotate_keys", "segment_kv"]
