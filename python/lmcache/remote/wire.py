"""Wire format of a chunk in the remote store, and the optional codecs.

    value = header (24 bytes) | body
    header = magic "LMCW" | version u8 | codec u8 | 2 pad | record_bytes u64 | XXH3-64(body) u64
             (0 for codec "none": the body is the record, whose own payload checksum
             and header are checked natively on import, so it is not hashed twice)
    body   = the record (codec "none"), or its zstd / lz4 compression, or the
             fp8 form (lossy): record header | per-layer float32 scales | e4m3 payload

Every value is checked on the way back: magic, version, codec, body checksum,
decoded size; the record inside is then checked again natively (header, key,
shape, payload checksum) before it reaches host memory. A short, long or
damaged value is refused, never handed to the engine.
"""

from __future__ import annotations

import struct

import numpy as np

from lmcache import _core

MAGIC = b"LMCW"
VERSION = 1
CODECS = {"none": 0, "zstd": 1, "lz4": 2, "fp8": 3}
_NAMES = {v: k for k, v in CODECS.items()}
_HEADER = struct.Struct("<4sBBxxQQ")
# The native chunk header (cpp/chunk_format.h): what the fp8 codec needs of it.
_CHUNK_HEADER = struct.Struct("<IHBBIIIIQQQQI4x")
_DTYPES = {1: np.float32, 2: np.float16, 3: "bfloat16"}
FP8_MAX = 448.0


class WireError(Exception):
    """A value that is not a whole, intact lmcache record."""


def header_for_raw(record_bytes: int) -> bytes:
    """The wire header of an uncompressed record: the exporter writes header
    and record into one bytes object (one copy of the record, no concatenation)."""
    return _HEADER.pack(MAGIC, VERSION, CODECS["none"], record_bytes, 0)


def encode(record: bytes, codec: str) -> bytes:
    if codec == "none":
        return header_for_raw(len(record)) + record
    if codec == "zstd":
        import zstandard

        body = zstandard.ZstdCompressor(level=1).compress(record)
    elif codec == "lz4":
        import lz4.frame

        body = lz4.frame.compress(record)
    elif codec == "fp8":
        body = _fp8_encode(bytes(record))
    else:
        raise ValueError(f"unknown codec {codec!r}")
    return _HEADER.pack(MAGIC, VERSION, CODECS[codec], len(record), _core.checksum64(body)) + body


def decode(value: bytes, expected_record_bytes: int) -> bytes:
    if value is None or len(value) < _HEADER.size:
        raise WireError("value too short")
    magic, version, codec, record_bytes, checksum = _HEADER.unpack_from(value)
    if magic != MAGIC or version != VERSION or codec not in _NAMES:
        raise WireError("not an lmcache value (magic, version or codec)")
    if record_bytes != expected_record_bytes:
        raise WireError(f"record of {record_bytes} bytes, expected {expected_record_bytes}")
    body = memoryview(value)[_HEADER.size:]
    name = _NAMES[codec]
    if name != "none" and _core.checksum64(body) != checksum:
        raise WireError("body checksum mismatch")
    try:
        if name == "none":
            record = bytes(body)
        elif name == "zstd":
            import zstandard

            record = zstandard.ZstdDecompressor().decompress(body, max_output_size=record_bytes)
        elif name == "lz4":
            import lz4.frame

            record = lz4.frame.decompress(bytes(body))
        else:
            record = _fp8_decode(bytes(body))
    except WireError:
        raise
    except Exception as e:  # a decompressor's own error on damaged input
        raise WireError(f"{name} decode failed: {type(e).__name__}") from None
    if len(record) != record_bytes:
        raise WireError("decoded size differs from the header")
    return record


def _fp8_encode(record: bytes) -> bytes:
    import torch

    h = _CHUNK_HEADER.unpack_from(record)
    dtype_code, layers, payload_bytes = h[3], h[4], h[8]
    if dtype_code not in _DTYPES:
        raise ValueError("the fp8 codec takes float32, float16 or bfloat16 caches")
    tdtype = {1: torch.float32, 2: torch.float16, 3: torch.bfloat16}[dtype_code]
    payload = torch.frombuffer(bytearray(record[64:64 + payload_bytes]), dtype=tdtype).view(layers, -1).float()
    scales = payload.abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX
    q = (payload / scales[:, None]).to(torch.float8_e4m3fn)
    return record[:64] + scales.numpy().astype("<f4").tobytes() + q.view(torch.uint8).numpy().tobytes()


def _fp8_decode(body: bytes) -> bytes:
    import torch

    h = _CHUNK_HEADER.unpack_from(body)
    dtype_code, layers, payload_bytes = h[3], h[4], h[8]
    if dtype_code not in _DTYPES or layers == 0:
        raise WireError("fp8 value with a bad record header")
    tdtype = {1: torch.float32, 2: torch.float16, 3: torch.bfloat16}[dtype_code]
    elems = payload_bytes // torch.tensor([], dtype=tdtype).element_size()
    if len(body) != 64 + 4 * layers + elems:
        raise WireError("fp8 value of the wrong size")
    scales = torch.frombuffer(bytearray(body[64:64 + 4 * layers]), dtype=torch.float32)
    q = torch.frombuffer(bytearray(body[64 + 4 * layers:]), dtype=torch.uint8).view(torch.float8_e4m3fn)
    payload = (q.view(layers, -1).float() * scales[:, None]).to(tdtype)
    raw = payload.view(torch.uint8).numpy().tobytes()
    header = bytearray(body[:64])
    # The payload changed (lossy), so the record gets the checksum of what it now holds.
    struct.pack_into("<Q", header, 32, _core.payload_checksum(raw, layers))
    return bytes(header) + raw
