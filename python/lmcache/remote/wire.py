"""Wire format of a chunk in the remote store (version 2), and the optional codecs.

    value  = header (60 bytes) | body
    header = magic "LMCW" | version u8 (2) | codec u8 | flags u8 | pad u8
             | record_bytes u64 (the decoded record's size) | body_bytes u64
             | key_id 8 bytes | nonce 12 bytes (random per value) | GCM tag 16 bytes
    body   = the record (codec "none"), its zstd / lz4 compression, or the fp8
             form (lossy): record header | per-layer float32 scales | e4m3 payload;
             with flag bit 0 the body is the AES-256-GCM ciphertext of that
             (compressed first, then encrypted).

Every value is sealed with AES-256-GCM under the record key (derived from the
user's secret by the engine), so only a holder of the secret can write a value
that will be accepted. The authenticated data is the header without its tag,
the chunk key the value is stored under (a value moved to another key fails)
and, when the body is not encrypted, the body itself (GMAC). key_id names the
key (a hash of it, not the key), so a value sealed under another secret is
recognised as such.

decode() checks, in this order and before any decompression: sizes, magic,
version, codec, flags, key_id, declared record size, then the tag; only then
does it decompress, with a hard cap at the declared (and expected) size. The
record inside is checked again natively on import (header, key, shape,
payload checksum). decode() is a pure function: bytes in, record out, or
WireError.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from lmcache import _core

MAGIC = b"LMCW"
VERSION = 2
CODECS = {"none": 0, "zstd": 1, "lz4": 2, "fp8": 3}
_NAMES = {v: k for k, v in CODECS.items()}
FLAG_ENCRYPTED = 0x01
_KNOWN_FLAGS = FLAG_ENCRYPTED
_HEADER = struct.Struct("<4sBBBxQQ8s12s16s")
HEADER_BYTES = _HEADER.size
_TAG_AT = HEADER_BYTES - 16  # the tag is the header's last field
_KEY_BYTES = 32
# The native record header (cpp/format/chunk_format.h): its size, and the
# fields the fp8 codec needs, come from the runtime (_core.record_header).
RECORD_HEADER_BYTES = _core.RECORD_HEADER_BYTES
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}  # what the fp8 codec takes
FP8_MAX = 448.0


class WireError(Exception):
    """A value that is not a whole, intact, authentic lmcache record.

    `integrity` is True when the value itself is proven bad (so it may be
    deleted from the shared store) and False when only this machine cannot
    read it (CodecUnavailable)."""

    integrity = True


class CodecUnavailable(WireError):
    """The value is authentic but its codec's module is not installed here."""

    integrity = False


class NotOurs(WireError):
    """A well-formed value this engine cannot judge: sealed under another
    secret (another deployment, or this one misconfigured) or written by
    another wire version. A miss here; never deleted, since it may be good
    data of whoever shares the store."""

    integrity = False


class RecordKey:
    """The 32-byte AES-256-GCM key that seals values. Its bytes are never part
    of a repr, a message or a log line; only key_id (a hash) is shown."""

    __slots__ = ("_aes", "key_id")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != _KEY_BYTES:
            raise ValueError(f"a record key is {_KEY_BYTES} bytes")
        self._aes = algorithms.AES(bytes(key))
        self.key_id = hashlib.sha256(b"lmcache-key-id\0" + bytes(key)).digest()[:8]

    def __repr__(self) -> str:
        return f"RecordKey(id={self.key_id.hex()})"

    def __reduce__(self):
        raise TypeError("a RecordKey is not picklable")

    def _gcm(self, nonce: bytes, chunk_key: str, head: memoryview, tag: bytes | None = None):
        """An encryptor (or, with a tag, a decryptor) with the common authenticated data fed in."""
        cipher = Cipher(self._aes, modes.GCM(nonce, tag))
        ctx = cipher.decryptor() if tag is not None else cipher.encryptor()
        ctx.authenticate_additional_data(head)
        key = chunk_key.encode()
        ctx.authenticate_additional_data(struct.pack("<H", len(key)) + key)
        return ctx


# ------------------------------------------------------------------ encode
def encode(record, codec: str, *, chunk_key: str, key: RecordKey, encrypt: bool = False):
    """The sealed value (bytes or bytearray) of `record` stored under `chunk_key`."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}")
    body = _compress(record, codec)
    return seal_body(body, CODECS[codec], len(record), chunk_key=chunk_key, key=key, encrypt=encrypt)


def seal_header(body, codec_id: int, record_bytes: int, *, chunk_key: str, key: RecordKey) -> bytes:
    """The header (tag included) of a value whose body is stored as it is
    (not encrypted): GMAC over the header, the chunk key and the body. The
    store path has the runtime write it in front of the exported record, so
    the value is built with one copy."""
    nonce = os.urandom(12)
    head = _HEADER.pack(MAGIC, VERSION, codec_id, 0, record_bytes, len(body), key.key_id, nonce, b"")[:_TAG_AT]
    gcm = key._gcm(nonce, chunk_key, memoryview(head))
    gcm.authenticate_additional_data(body)
    gcm.finalize()
    return head + gcm.tag


def seal_body(body, codec_id: int, record_bytes: int, *, chunk_key: str, key: RecordKey, encrypt: bool):
    """Header + (encrypted) body with its tag. (Public for the fuzz harness, which seals arbitrary bodies.)"""
    if not encrypt:
        return b"".join((seal_header(body, codec_id, record_bytes, chunk_key=chunk_key, key=key), body))
    nonce = os.urandom(12)
    head = _HEADER.pack(MAGIC, VERSION, codec_id, FLAG_ENCRYPTED, record_bytes, len(body), key.key_id, nonce,
                        b"")[:_TAG_AT]
    gcm = key._gcm(nonce, chunk_key, memoryview(head))
    out = bytearray(HEADER_BYTES + len(body))
    gcm.update_into(body, memoryview(out)[HEADER_BYTES:])
    gcm.finalize()
    out[:_TAG_AT] = head
    out[_TAG_AT:HEADER_BYTES] = gcm.tag
    return out


def _compress(record, codec: str):
    if codec == "none":
        return record
    if codec == "zstd":
        # The frame declares its content size: the reader refuses any other size before decompressing.
        return _module("zstandard").ZstdCompressor(level=1, write_content_size=True).compress(record)
    if codec == "lz4":
        return _module("lz4.frame").compress(record, store_size=True)
    return _fp8_encode(bytes(record))


# ------------------------------------------------------------------ decode
def decode(value, *, chunk_key: str, expected_record_bytes: int, key: RecordKey):
    """The record (a bytes-like object) inside `value`, or WireError."""
    codec, body = _open(value, chunk_key, expected_record_bytes, key)
    try:
        record = _decompress(codec, body, expected_record_bytes)
    except WireError:
        raise
    except Exception as e:  # a decompressor's own error on a damaged body
        raise WireError(f"{codec} decode failed: {type(e).__name__}") from None
    if len(record) != expected_record_bytes:
        raise WireError("decoded size differs from the header")
    return record


def _open(value, chunk_key: str, expected_record_bytes: int, key: RecordKey):
    """Checks the header and the tag; returns (codec name, plaintext body)."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise WireError("no value")
    mv = memoryview(value).cast("B")
    if len(mv) < HEADER_BYTES:
        raise WireError("value too short")
    magic, version, codec, flags, record_bytes, body_bytes, key_id, nonce, tag = _HEADER.unpack_from(mv)
    if magic != MAGIC:
        raise WireError("not an lmcache value")
    if version != VERSION:
        raise NotOurs(f"wire version {version}; this reader takes {VERSION}")
    if codec not in _NAMES or flags & ~_KNOWN_FLAGS:
        raise WireError("unknown codec or flags")
    if body_bytes != len(mv) - HEADER_BYTES:
        raise WireError(f"body of {len(mv) - HEADER_BYTES} bytes, header says {body_bytes}")
    if key_id != key.key_id:
        raise NotOurs("sealed under another secret")
    if record_bytes != expected_record_bytes:
        raise WireError(f"record of {record_bytes} bytes, expected {expected_record_bytes}")
    body = mv[HEADER_BYTES:]
    gcm = key._gcm(nonce, chunk_key, mv[:_TAG_AT], tag)
    try:
        if flags & FLAG_ENCRYPTED:
            plain = bytearray(len(body))
            gcm.update_into(body, plain)
            gcm.finalize()  # raises before `plain` leaves this function
            body = memoryview(plain)
        else:
            gcm.authenticate_additional_data(body)
            gcm.finalize()
    except InvalidTag:
        raise WireError("authentication failed (changed, moved to another key, or sealed with another "
                        "secret)") from None
    return _NAMES[codec], body


def _decompress(codec: str, body: memoryview, record_bytes: int):
    if codec == "none":
        return body
    if codec == "zstd":
        zstd = _module("zstandard")
        declared = zstd.get_frame_parameters(body).content_size
        if declared == zstd.CONTENTSIZE_UNKNOWN:  # our writer always says
            raise WireError("zstd frame without its content size")
        if declared != record_bytes:
            raise WireError(f"zstd frame declares {declared} bytes, expected {record_bytes}")
        return zstd.ZstdDecompressor().decompress(body, max_output_size=record_bytes, allow_extra_data=False)
    if codec == "lz4":
        lz4 = _module("lz4.frame")
        declared = lz4.get_frame_info(body)["content_size"]
        if declared != record_bytes:
            raise WireError(f"lz4 frame declares {declared} bytes, expected {record_bytes}")
        d = lz4.LZ4FrameDecompressor()
        out = d.decompress(body, max_length=record_bytes)  # a hard cap, whatever the frame holds
        if not d.eof or d.unused_data:
            raise WireError("lz4 frame longer than declared, truncated, or followed by other data")
        return out
    return _fp8_decode(body, record_bytes)


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise CodecUnavailable(f"the codec's module {name!r} is not installed on this machine") from None


# ------------------------------------------------------------------ fp8 (lossy)
def _fp8_layout(head, what: type[Exception]) -> tuple[str, int, int]:
    """(dtype name, layers, payload bytes) of a record header, or `what` if unusable."""
    h = _core.record_header(head[:RECORD_HEADER_BYTES])
    dtype_code, layers, payload_bytes = h["dtype"], h["num_layers"], h["payload_bytes"]
    if dtype_code not in _DTYPE_BYTES or layers == 0 or payload_bytes % (layers * _DTYPE_BYTES[dtype_code]):
        raise what("the fp8 codec takes float32, float16 or bfloat16 records of whole layers")
    return dtype_code, layers, payload_bytes


def _torch_dtype(torch, name: str):
    return getattr(torch, name)


def _fp8_encode(record: bytes) -> bytes:
    import torch

    dtype_code, layers, payload_bytes = _fp8_layout(record, ValueError)
    payload = record[RECORD_HEADER_BYTES:RECORD_HEADER_BYTES + payload_bytes]
    values = torch.frombuffer(bytearray(payload), dtype=_torch_dtype(torch, dtype_code)).view(layers, -1).float()
    scales = values.abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX
    q = (values / scales[:, None]).to(torch.float8_e4m3fn)
    return record[:RECORD_HEADER_BYTES] + scales.numpy().astype("<f4").tobytes() + q.view(torch.uint8).numpy().tobytes()


def _fp8_decode(body: memoryview, record_bytes: int) -> bytes:
    torch = _module("torch")
    if len(body) < RECORD_HEADER_BYTES:
        raise WireError("fp8 value too short")
    dtype_code, layers, payload_bytes = _fp8_layout(body, WireError)
    elems = payload_bytes // _DTYPE_BYTES[dtype_code]
    if RECORD_HEADER_BYTES + payload_bytes != record_bytes or len(body) != RECORD_HEADER_BYTES + 4 * layers + elems:
        raise WireError("fp8 value of the wrong size")
    scales = torch.frombuffer(bytearray(body[RECORD_HEADER_BYTES:RECORD_HEADER_BYTES + 4 * layers]),
                              dtype=torch.float32)
    q = torch.frombuffer(bytearray(body[RECORD_HEADER_BYTES + 4 * layers:]), dtype=torch.uint8)
    payload = (q.view(torch.float8_e4m3fn).view(layers, -1).float() * scales[:, None])
    raw = payload.to(_torch_dtype(torch, dtype_code)).view(torch.uint8).numpy().tobytes()
    header = bytearray(body[:RECORD_HEADER_BYTES])
    # The payload changed (lossy), so the record gets the checksum of what it now holds.
    struct.pack_into("<Q", header, _core.RECORD_CHECKSUM_OFFSET, _core.payload_checksum(raw, layers))
    return bytes(header) + raw
