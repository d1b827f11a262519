"""A C engine (liblmcache.so through ctypes) for the tests in this folder:
the same calls a C serving engine makes, on numpy caches laid out as vLLM's
(2, blocks, block_size, heads, head_dim) per layer."""

from __future__ import annotations

import ctypes
import os

import numpy as np

import lmcache

_DTYPES = {np.float32: 1, np.float16: 2}


class _Layout(ctypes.Structure):
    _fields_ = [("num_layers", ctypes.c_uint32), ("num_planes", ctypes.c_uint32), ("num_heads", ctypes.c_uint32),
                ("head_dim", ctypes.c_uint32), ("dtype", ctypes.c_int), ("block_size", ctypes.c_uint32),
                ("num_blocks", ctypes.c_uint64), ("stride_plane", ctypes.c_int64), ("stride_block", ctypes.c_int64),
                ("stride_token", ctypes.c_int64), ("stride_head", ctypes.c_int64),
                ("layer_base", ctypes.POINTER(ctypes.c_uint64)), ("memory", ctypes.c_int32),
                ("cuda_device", ctypes.c_int32)]


def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(os.path.join(lmcache.get_library_dir(), "liblmcache.so"))
    lib.lmc_last_error.restype = ctypes.c_char_p
    return lib


class CError(Exception):
    pass


class CEngine:
    def __init__(self, caches: list[np.ndarray], **config: str) -> None:
        self.lib = _library()
        self.caches = caches
        cfg = ctypes.c_void_p()
        self._check(self.lib.lmc_config_create(ctypes.byref(cfg)))
        try:
            for k, v in config.items():
                self._check(self.lib.lmc_config_set(cfg, k.encode(), str(v).encode()))
            self.engine = ctypes.c_void_p()
            self._check(self.lib.lmc_engine_create(cfg, ctypes.byref(self.engine)))
        finally:
            self.lib.lmc_config_destroy(cfg)
        c = caches[0]
        _, blocks, block_size, heads, head_dim = c.shape
        self._bases = (ctypes.c_uint64 * len(caches))(*[a.ctypes.data for a in caches])
        s = c.strides
        self.layout = _Layout(len(caches), 2, heads, head_dim, _DTYPES[c.dtype.type], block_size, blocks, s[0], s[1],
                              s[2], s[3], self._bases, 0, 0)
        self._check(self.lib.lmc_engine_register_kv(self.engine, ctypes.byref(self.layout)))

    def _check(self, status: int) -> None:
        if status != 0:
            raise CError(self.lib.lmc_last_error().decode())

    def _call(self, fn, tokens, block_ids):
        t = (ctypes.c_uint32 * len(tokens))(*tokens)
        bs = self.layout.block_size
        slots = [b * bs + i for b in block_ids for i in range(bs)][:len(tokens)]
        s = (ctypes.c_int64 * len(slots))(*slots)
        n = ctypes.c_size_t()
        self._check(fn(self.engine, t, len(tokens), ctypes.byref(self.layout), s, len(slots), ctypes.byref(n)))
        return n.value

    def store(self, tokens, block_ids) -> int:
        return self._call(self.lib.lmc_store, tokens, block_ids)

    def load(self, tokens, block_ids) -> int:
        return self._call(self.lib.lmc_load, tokens, block_ids)

    def lookup(self, tokens) -> int:
        t = (ctypes.c_uint32 * len(tokens))(*tokens)
        n = ctypes.c_size_t()
        self._check(self.lib.lmc_lookup(self.engine, t, len(tokens), ctypes.byref(n)))
        return n.value

    def flush(self) -> None:
        self._check(self.lib.lmc_engine_flush(self.engine))

    def stat(self, name: str) -> int:
        v = ctypes.c_uint64()
        self._check(self.lib.lmc_get_stat(self.engine, name.encode(), ctypes.byref(v)))
        return v.value

    def close(self) -> None:
        if self.engine:
            self.lib.lmc_engine_destroy(self.engine)
            self.engine = None

    def __enter__(self) -> "CEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
