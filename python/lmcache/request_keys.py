"""Chunk keys computed once per request (or per segment) and reused.

A request is looked up (maybe several times while it waits), loaded, and
stored chunk by chunk over several steps; all of these need the same keys.
The first of them hashes the prompt (one native pass) and the rest reuse the
keys, until the engine reports the request finished. A segment (blending) is
looked up, loaded and stored by many requests: its keys are kept by its
content. Bounded: past `limit` entries the oldest are forgotten, and a
forgotten one is simply hashed again.
"""

from __future__ import annotations

import collections
import threading
from typing import Iterable, Sequence

import numpy as np

from lmcache import _core


class RequestKeys:
    def __init__(self, engine, limit: int = 4096) -> None:
        self._engine = engine
        self._limit = limit
        # req_id -> ((length, checksum of the tokens), keys, the tokens for
        # content-kept entries). The lookup server's threads and the worker's
        # thread both call get().
        self._entries: "collections.OrderedDict[str, tuple]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, req_id: str, token_ids: Sequence[int]) -> "_core.ChunkKeys":
        """The keys of the whole chunks of `token_ids`, the prompt of `req_id`."""
        # The keys are reused only for the same tokens: a request id reused for
        # another prompt, or a lookup of a truncated prompt, gets keys of its
        # own. The check is one 64-bit checksum of the token bytes (XXH3,
        # vectorised: microseconds), not the chained chunk hashing it saves.
        tokens = np.ascontiguousarray(token_ids, dtype=np.uint32)
        digest = (len(tokens), _core.checksum64(tokens))
        return self._get(req_id, digest, tokens)

    def of_content(self, token_ids: Sequence[int]) -> "_core.ChunkKeys":
        """The keys of the whole chunks of `token_ids`, kept by the tokens
        themselves (length and XXH3-64): for text that many requests share."""
        tokens = np.ascontiguousarray(token_ids, dtype=np.uint32)
        digest = (len(tokens), _core.checksum64(tokens))
        # Any request may name any content, and XXH3 is no defence against a
        # crafted collision: the kept tokens themselves must match, or another
        # request's text could be served under these keys.
        return self._get(f"content:{digest[0]}:{digest[1]:016x}", digest, tokens, keep_tokens=True)

    def _get(self, req_id: str, digest: tuple[int, int], tokens: np.ndarray,
             keep_tokens: bool = False) -> "_core.ChunkKeys":
        if req_id:
            with self._lock:
                entry = self._entries.get(req_id)
                if entry is not None and entry[0] == digest and (entry[2] is None or np.array_equal(entry[2], tokens)):
                    self._entries.move_to_end(req_id)
                    return entry[1]
        keys = self._engine.keys(tokens)
        if req_id:
            with self._lock:
                self._entries[req_id] = (digest, keys, tokens.copy() if keep_tokens else None)
                self._entries.move_to_end(req_id)
                while len(self._entries) > self._limit:
                    self._entries.popitem(last=False)
        return keys

    def forget(self, req_ids: Iterable[str]) -> None:
        with self._lock:
            for req_id in req_ids or ():
                self._entries.pop(req_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
