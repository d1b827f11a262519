"""Fuzzes the remote tier's wire decoder (lmcache.remote.wire.decode) with atheris.

    pip install atheris
    python3 tests/fuzz/fuzz_wire.py -max_total_time=60 tests/fuzz/corpus/wire
    python3 tests/fuzz/fuzz_wire.py --make-seeds tests/fuzz/corpus/wire   (rewrites the seeds)

Input: byte 0 picks the mode and the expected record size; byte 1 the codec
and whether the body is encrypted; the rest is the payload.
- mode 0: the payload is a whole value as read from the store, decoded under
  the harness's key (the seeds are valid values, so mutations of them reach
  every check after the header);
- mode 1: the payload is a body, sealed correctly under the harness's key
  with the codec chosen, then decoded: what a holder of the secret could write
  (damaged compression, compression bombs, malformed fp8 bodies).
decode may only raise WireError; what it returns must be a record of the
expected size. Anything else is a finding.

wire.py is loaded from this checkout's source by path (its native helpers
come from the installed lmcache package). New inputs the fuzzer finds go to a
scratch directory, not into the seed corpus.
"""

import importlib.util
import os
import struct
import sys

import atheris
from fuzz_common import with_scratch_corpus

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python", "lmcache", "remote",
                      "wire.py")


def _load_wire():
    spec = importlib.util.spec_from_file_location("wire_under_fuzz", SOURCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    for fn in (module.decode, module._open, module._decompress, module._fp8_decode, module._fp8_layout):
        atheris.instrument_func(fn)  # coverage feedback for the decoder only
    return module


wire = _load_wire()
wire._module("torch")  # the fp8 codec's import, once at start, not inside the first unit that reaches it
KEY = wire.RecordKey(bytes(range(32)))
CHUNK_KEY = "0123456789abcdef0123456789abcdef"
RH = wire.RECORD_HEADER_BYTES
RECORD_SIZES = (RH + 256, RH + 4096, RH + 65536, 0)


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, record_bytes = data[0] & 1, RECORD_SIZES[(data[0] >> 1) % len(RECORD_SIZES)]
    codec, encrypt, payload = data[1] % len(wire.CODECS), bool(data[1] & 0x80), data[2:]
    if mode == 0:
        value = payload
    else:
        value = wire.seal_body(payload, codec, record_bytes, chunk_key=CHUNK_KEY, key=KEY, encrypt=encrypt)
    try:
        record = wire.decode(value, chunk_key=CHUNK_KEY, expected_record_bytes=record_bytes, key=KEY)
    except wire.WireError:
        return  # the declared outcome: a refused value
    assert len(record) == record_bytes, "decode returned a record of the wrong size"


def _record(payload_bytes: int, layers: int = 2, dtype_code: int = 1) -> bytes:
    """A record whose header has the fields the fp8 codec reads (the rest is zero)."""
    header = bytearray(RH)
    struct.pack_into("<BI", header, 7, dtype_code, layers)
    struct.pack_into("<Q", header, 24, payload_bytes)
    payload = struct.pack("<f", 0.5) * (payload_bytes // 4)
    return bytes(header) + payload


def make_seeds(directory: str) -> None:
    """Valid values of every codec (mode 0) and plain bodies to seal (mode 1)."""
    os.makedirs(directory, exist_ok=True)
    record = _record(256)
    seeds = {}
    for name, codec_id in wire.CODECS.items():
        for encrypt in (False, True):
            value = wire.encode(record, name, chunk_key=CHUNK_KEY, key=KEY, encrypt=encrypt)
            seeds[f"value_{name}{'_encrypted' if encrypt else ''}"] = bytes([0, codec_id | (0x80 * encrypt)]) + value
    seeds["body_zstd"] = bytes([1, 1]) + wire._compress(record, "zstd")
    seeds["body_lz4"] = bytes([1, 2]) + wire._compress(record, "lz4")
    seeds["body_fp8"] = bytes([1, 3]) + wire._compress(record, "fp8")
    seeds["short"] = bytes([0, 0]) + b"LMCW\x02"
    for name, data in seeds.items():
        TestOneInput(data)  # every seed runs clean
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make-seeds":
        make_seeds(sys.argv[2])
        return
    atheris.Setup(with_scratch_corpus(sys.argv, "wire"), TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
