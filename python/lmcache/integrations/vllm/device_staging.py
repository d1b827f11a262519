"""KV caches that the native copy engine cannot address directly (GPU memory,
until lmcache's CUDA kernels exist) move through a host staging buffer:

    store: gather the request's blocks on the device (one index_select per
           layer into one buffer), one non-blocking copy into pinned memory,
           then the native store from that buffer.
    load:  native load into the staging buffer, one copy to the device, then
           one index_copy_ per layer into the request's blocks.

Plain torch, so it is device-agnostic: tests run it on CPU tensors.
"""

from __future__ import annotations

import numpy as np

from lmcache import layouts
from lmcache.engine import CacheEngine


class DeviceStaging:
    def __init__(self, engine: CacheEngine, layers: list, layout: str, block_size: int) -> None:
        import torch

        self._torch = torch
        self.engine, self.layers, self.layout, self.block_size = engine, layers, layout, block_size
        self.block_dim = layouts.block_dim(layout)
        self._pin = layers[0].device.type == "cuda"
        self._shape_registered = False

    def _staging(self, num_blocks: int):
        """A host buffer (layers, *per-layer shape with num_blocks blocks), pinned when the cache is on a GPU."""
        torch = self._torch
        first = self.layers[0]
        shape = list(first.shape)
        shape[self.block_dim] = num_blocks
        return torch.empty([len(self.layers)] + shape, dtype=first.dtype, pin_memory=self._pin)

    def _register(self, host_layers: list) -> None:
        if not self._shape_registered:
            self.engine.register_kv_shape(host_layers, self.layout)
            self._shape_registered = True

    def store(self, request, block_ids: list[int], num_tokens: int) -> int:
        """`request`: the request's token ids or its ChunkKeys (see CacheEngine.keys)."""
        torch = self._torch
        nblk = (num_tokens + self.block_size - 1) // self.block_size
        idx = torch.as_tensor(block_ids[:nblk], dtype=torch.long, device=self.layers[0].device)
        gathered = torch.stack([t.index_select(self.block_dim, idx) for t in self.layers])
        host = self._staging(nblk)
        host.copy_(gathered, non_blocking=self._pin)
        if self._pin:
            torch.cuda.current_stream(self.layers[0].device).synchronize()
        host_layers = list(host.unbind(0))
        self._register(host_layers)
        slots = np.arange(num_tokens, dtype=np.int64)
        return self.engine.store(request, host_layers, slot_mapping=slots, layout=self.layout)

    def load(self, request, block_ids: list[int], load_from: int, load_until: int) -> int:
        """Returns leading tokens valid in the engine's cache (as CacheEngine.load)."""
        torch = self._torch
        bs = self.block_size
        first_block = load_from // bs  # vLLM's own hits end on a block boundary
        nblk = (load_until + bs - 1) // bs
        host = self._staging(nblk)
        host_layers = list(host.unbind(0))
        self._register(host_layers)
        slots = np.arange(load_until, dtype=np.int64)
        slots[:load_from] = -1
        loaded = self.engine.load(request, host_layers, slot_mapping=slots, layout=self.layout)
        end_block = (loaded + bs - 1) // bs
        if end_block > first_block:
            device = self.layers[0].device
            sel = torch.arange(first_block, end_block, dtype=torch.long)
            dev = host.index_select(1 + self.block_dim, sel).to(device, non_blocking=self._pin)
            idx = torch.as_tensor(block_ids[first_block:end_block], dtype=torch.long, device=device)
            for layer, src in zip(self.layers, dev.unbind(0)):
                layer.index_copy_(self.block_dim, idx, src)
        return loaded
