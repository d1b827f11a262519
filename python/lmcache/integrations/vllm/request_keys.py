"""The chunk keys of the requests a worker serves, computed once per request.

A request is looked up (maybe several times while it waits), loaded, and
stored chunk by chunk over several steps; all of these need the same keys.
The first of them hashes the prompt (one native pass) and the rest reuse the
keys, until vLLM reports the request finished. Bounded: past `limit`
requests the oldest are forgotten, and a forgotten request is simply hashed
again.
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
        # req_id -> ((length, checksum of the tokens), keys). The lookup server's
        # threads and the worker's thread both call get().
        self._entries: "collections.OrderedDict[str, tuple[tuple[int, int], _core.ChunkKeys]]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, req_id: str, token_ids: Sequence[int]) -> "_core.ChunkKeys":
        """The keys of the whole chunks of `token_ids`, the prompt of `req_id`."""
        # The keys are reused only for the same tokens: a request id reused for
        # another prompt, or a lookup of a truncated prompt, gets keys of its
        # own. The check is one 64-bit checksum of the token bytes (XXH3,
        # vectorised: microseconds), not the chained chunk hashing it saves.
        tokens = np.ascontiguousarray(token_ids, dtype=np.uint32)
        digest = (len(tokens), _core.checksum64(tokens))
        if req_id:
            with self._lock:
                entry = self._entries.get(req_id)
                if entry is not None and entry[0] == digest:
                    self._entries.move_to_end(req_id)
                    return entry[1]
        keys = self._engine.keys(tokens)
        if req_id:
            with self._lock:
                self._entries[req_id] = (digest, keys)
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
