"""Engine KV tensors -> the native layout descriptor (``lmcache._core.KVLayout``).

Each named layout lists the tensor's dimensions, outermost first:

    L layer   P plane (K, V)   B block   T token in block   S slot (B*T merged)
    H KV head D head_dim

The descriptor's byte strides are read from the tensor itself, so a permuted
view (say an HND cache viewed as NHD) is described correctly without a copy.
Per-layer layouts take a list of tensors; layouts with an ``L`` dimension take
one tensor that holds every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

from lmcache import _core
from lmcache.errors import InvalidArgumentError


@dataclass(frozen=True)
class LayoutSpec:
    dims: str
    doc: str
    opaque_blocks: bool = False  # blocks move whole (see cpp/kv_layout.h)


LAYOUTS: dict[str, LayoutSpec] = {
    "vllm_flash_attn": LayoutSpec("PBTHD", "vLLM flash-attention: per layer (2, blocks, block_size, heads, dim)"),
    "vllm_flashinfer": LayoutSpec("BPTHD", "vLLM FlashInfer NHD: per layer (blocks, 2, block_size, heads, dim)"),
    "vllm_flashinfer_hnd": LayoutSpec("BPHTD", "FlashInfer HND: per layer (blocks, 2, heads, block_size, dim)"),
    "vllm_mla": LayoutSpec("BTD", "vLLM MLA: per layer (blocks, block_size, latent dim)"),
    "vllm_cpu": LayoutSpec(
        "BHTX",
        "vLLM CPU attention: per layer (blocks, heads, block_size, 2*dim); the kernel arranges a block "
        "internally (K transposed), so blocks move whole",
        opaque_blocks=True,
    ),
    "dense": LayoutSpec("PLSHD", "KV of a run of tokens held outside any engine's paged cache (a segment's, for "
                        "blending): (2, layers, tokens, heads, dim); slot = token, any block_size dividing the tokens"),
    "sglang_layer_first": LayoutSpec("PLSHD", "SGLang MHA host pool layer_first: (2, layers, slots, heads, dim)"),
    "sglang_page_first": LayoutSpec("PSLHD", "SGLang MHA host pool page_first: (2, slots, layers, heads, dim)"),
    "sglang_page_first_direct": LayoutSpec(
        "PBLTHD", "SGLang MHA host pool page_first_direct: (2, pages, layers, page_size, heads, dim)"
    ),
    "sglang_mla_layer_first": LayoutSpec("LSHD", "SGLang MLA host pool layer_first: (layers, slots, 1, dim)"),
    "sglang_mla_page_first": LayoutSpec("SLHD", "SGLang MLA host pool page_first: (slots, layers, 1, dim)"),
    "sglang_mla_page_first_direct": LayoutSpec(
        "BLTHD", "SGLang MLA host pool page_first_direct: (pages, layers, page_size, 1, dim)"
    ),
}

_DTYPES = {
    "torch.float32": "float32",
    "torch.float16": "float16",
    "torch.bfloat16": "bfloat16",
    "torch.float8_e4m3fn": "float8_e4m3fn",
    "torch.float8_e5m2": "float8_e5m2",
    "torch.uint8": "uint8",
}

TensorOrList = Union["torch.Tensor", Sequence["torch.Tensor"]]  # noqa: F821


def block_dim(layout: str) -> int:
    """The dimension of a per-layer tensor of `layout` that indexes blocks."""
    return _spec(layout).dims.index("B")


def block_size_dim(layout: str) -> int:
    """The dimension of a per-layer tensor of `layout` that holds the block size."""
    return _spec(layout).dims.index("T")


def vllm_layout_of(kv) -> str:
    """The layout name of one of vLLM's per-layer KV tensors."""
    if kv.device.type == "cpu" and kv.dim() == 4:
        return "vllm_cpu"  # CPU attention: (blocks, heads, block_size, 2*head_size), kernel-arranged
    if kv.dim() == 5 and kv.shape[0] == 2:
        return "vllm_flash_attn"  # (2, blocks, block_size, heads, head_size)
    if kv.dim() == 5 and kv.shape[1] == 2:
        return "vllm_flashinfer"  # (blocks, 2, block_size, heads, head_size)
    if kv.dim() == 3:
        return "vllm_mla"  # (blocks, block_size, latent)
    raise NotImplementedError(f"lmcache does not know vLLM's KV layout of shape {tuple(kv.shape)} on {kv.device}")


def slots_from_blocks(layout: _core.KVLayout, block_ids, num_tokens: int):
    """Slot mapping (int64 array) of the first num_tokens tokens of a block
    table: block b's tokens are slots b*block_size .. +block_size-1. Done
    natively: every id is checked against the cache before it is multiplied,
    and a negative id skips its tokens (slot -1)."""
    import numpy as np

    return _core.slots_from_blocks(layout, np.ascontiguousarray(block_ids, dtype=np.int64), num_tokens)


def _spec(layout: str) -> LayoutSpec:
    spec = LAYOUTS.get(layout)
    if spec is None:
        raise InvalidArgumentError(f"unknown KV layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    return spec


def describe(kv_caches: TensorOrList, layout: str, *, block_size: int | None = None) -> _core.KVLayout:
    """Builds the descriptor of `kv_caches` in the named `layout`.

    `block_size` is needed only by layouts with a merged slot dimension (S):
    SGLang's host pools, whose page size is not part of the tensor shape.
    """
    spec = _spec(layout)
    per_layer = "L" not in spec.dims
    tensors = _as_tensor_list(kv_caches, per_layer, layout)
    first = tensors[0]
    _check_tensor(first, spec, layout)
    for t in tensors[1:]:
        if t.shape != first.shape or t.dtype != first.dtype or t.stride() != first.stride() or t.device != first.device:
            raise InvalidArgumentError(f"{layout}: every layer's tensor must have the same shape, dtype and strides")
    size = dict(zip(spec.dims, first.shape))
    es = first.element_size()
    stride = {d: s * es for d, s in zip(spec.dims, first.stride())}

    if "S" in spec.dims:
        if not block_size or block_size <= 0:
            raise InvalidArgumentError(f"{layout}: block_size (the page size) is required and must be positive")
        if size["S"] % block_size:
            raise InvalidArgumentError(f"{layout}: {size['S']} slots are not a whole number of pages of {block_size}")
        bs, num_blocks = block_size, size["S"] // block_size
        stride_token, stride_block = stride["S"], stride["S"] * block_size
    else:
        bs, num_blocks = size["T"], size["B"]
        stride_token, stride_block = stride["T"], stride["B"]

    if spec.opaque_blocks:
        if size["X"] % 2:
            raise InvalidArgumentError(f"{layout}: the last dimension holds K and V and must be even")
        heads, head_dim, planes = size["H"], size["X"] // 2, 2
    else:
        heads, head_dim, planes = size.get("H", 1), size["D"], size.get("P", 1)

    if per_layer:
        bases = [t.data_ptr() for t in tensors]
    else:
        bases = [first.data_ptr() + layer * stride["L"] for layer in range(size["L"])]

    return _core.KVLayout(
        num_layers=len(bases),
        num_planes=planes,
        num_heads=heads,
        head_dim=head_dim,
        dtype=_DTYPES[str(first.dtype)],
        block_size=bs,
        num_blocks=num_blocks,
        stride_plane=stride.get("P", 0),
        stride_block=stride_block,
        stride_token=0 if spec.opaque_blocks else stride_token,
        stride_head=0 if spec.opaque_blocks else stride.get("H", 0),
        layer_base=bases,
        opaque_block_bytes=planes * bs * heads * head_dim * es if spec.opaque_blocks else 0,
        device=first.device.index if first.device.type == "cuda" else -1,
    )


def _as_tensor_list(kv_caches: TensorOrList, per_layer: bool, layout: str) -> list:
    import torch

    if isinstance(kv_caches, torch.Tensor):
        tensors = [kv_caches]
        if per_layer:
            raise InvalidArgumentError(f"{layout} takes one tensor per layer (a list), got a single tensor")
    elif isinstance(kv_caches, dict):
        tensors = list(kv_caches.values())
    else:
        tensors = list(kv_caches)
    if not tensors:
        raise InvalidArgumentError("no KV cache tensors given")
    if not per_layer and len(tensors) != 1:
        raise InvalidArgumentError(f"{layout} takes one tensor holding every layer, got {len(tensors)}")
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            raise InvalidArgumentError(f"KV caches must be torch tensors, got {type(t).__name__}")
    return tensors


def _check_tensor(t, spec: LayoutSpec, layout: str) -> None:
    if t.dim() != len(spec.dims):
        raise InvalidArgumentError(
            f"{layout} expects {len(spec.dims)}-D tensors ({spec.doc}), got shape {tuple(t.shape)}"
        )
    if str(t.dtype) not in _DTYPES:
        raise InvalidArgumentError(
            f"unsupported KV dtype {t.dtype}; allowed: {', '.join(d.replace('torch.', '') for d in _DTYPES)}"
        )
    if t.device.type == "cuda" and _core.device_backend() != "cuda":
        raise InvalidArgumentError(
            f"KV cache on {t.device}, but this lmcache was built without CUDA: "
            "rebuild with nvcc present, or pass CPU tensors"
        )
    if t.device.type not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"KV cache on {t.device}: lmcache moves KV from CPU or CUDA memory only")
    if t.stride()[-1] != 1:
        raise InvalidArgumentError(f"{layout}: the last dimension must be contiguous (stride 1), got {t.stride()}")
    if spec.opaque_blocks and not t[0].is_contiguous():
        raise InvalidArgumentError(f"{layout}: each block must be contiguous to move whole")
