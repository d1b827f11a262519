"""Where a prompt's segments are: at a separator token sequence, or at offsets.

A segment is text that may come back elsewhere in another prompt (a passage,
a document, a tool result). The separator's own tokens belong to no segment:
they are glue, computed with the prompt like a question or an instruction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_at_separator(token_ids: Sequence[int], separator: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each non-empty run of tokens between occurrences of
    `separator` (and before the first, after the last). No occurrence: one
    span, the whole prompt. Occurrences do not overlap (found left to right)."""
    tokens = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    sep = np.asarray(separator, dtype=np.int64).reshape(-1)
    if sep.size == 0:
        raise ValueError("the segment separator is empty: give at least one token id")
    matches: list[int] = []
    if tokens.size >= sep.size:
        # One vectorised comparison of every window; the loop below runs over
        # the matches only, never over tokens.
        windows = np.lib.stride_tricks.sliding_window_view(tokens, sep.size)
        for start in np.flatnonzero((windows == sep).all(axis=1)).tolist():
            if not matches or start >= matches[-1] + sep.size:
                matches.append(start)
    bounds = [0]
    for start in matches:
        bounds += [start, start + sep.size]
    bounds.append(int(tokens.size))
    return [(s, e) for s, e in zip(bounds[::2], bounds[1::2]) if e > s]


def spans_from_offsets(offsets: Sequence[int], prompt_len: int) -> list[tuple[int, int]]:
    """Segments from the offsets a caller passes: each offset starts a segment
    that runs to the next one (the last to the end of the prompt); tokens
    before the first offset are in no segment."""
    bounds = [int(o) for o in offsets]
    if any(not 0 <= b < prompt_len for b in bounds) or bounds != sorted(set(bounds)):
        raise ValueError(f"segment offsets {list(offsets)!r} must be increasing positions inside the prompt of "
                         f"{prompt_len} tokens")
    return list(zip(bounds, bounds[1:] + [prompt_len]))
