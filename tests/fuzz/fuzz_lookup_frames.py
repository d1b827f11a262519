"""Fuzzes the request-frame parser of the vLLM lookup socket with atheris.

    pip install atheris
    python3 tests/fuzz/fuzz_lookup_frames.py -max_total_time=60 tests/fuzz/corpus/lookup_frames

The input's first byte picks where the stream starts (a fresh connection,
whose first frame must be the hello, or one already past it) and a token
limit; the rest is what a peer would send, parsed frame after frame by the
server's own read_request until the input ends. The parser may only raise
its declared FrameError (AuthError is one) or PeerClosed, which the reader
below raises when the input ends mid-frame like a closed connection; what it
returns must agree with its header. Anything else is a finding.

lookup_frames.py is loaded from this checkout's source by path, so the
harness needs numpy and atheris but not vLLM. New inputs the fuzzer finds go to a
scratch directory, not into the seed corpus.
"""

import importlib.util
import io
import os
import sys

import atheris
from fuzz_common import with_scratch_corpus

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python", "lmcache", "integrations",
                      "vllm", "lookup_frames.py")


def _load_parser():
    spec = importlib.util.spec_from_file_location("lookup_frames_under_fuzz", SOURCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    for fn in (module.read_request, module._body_length, module.Request.tokens, module.Request.req_id):
        atheris.instrument_func(fn)  # coverage feedback for the parser only
    return module


rpc = _load_parser()
MAX_FRAMES = 64  # frames per input: keeps one run short
TOKEN_LIMITS = (0, 1, 100, rpc.MAX_TOKENS)  # MAX_TOKENS is the server's default


def reader(stream: io.BytesIO):
    def read(k: int) -> bytes:
        data = stream.read(k)
        if len(data) != k:
            raise rpc.PeerClosed("the input ended mid-frame")
        return data

    return read


def check(request, first: bool, max_tokens: int) -> None:
    """What read_request returned agrees with its header (else: a finding)."""
    if request.op == rpc.OP_HELLO:
        assert first and request.n == rpc.SECRET_BYTES and len(request.body) == rpc.SECRET_BYTES
    elif request.op in (rpc.OP_LOOKUP, rpc.OP_SEGMENT):
        assert not first and request.n <= max_tokens and len(request.body) == rpc.REQ_ID_BYTES + 4 * request.n
        assert len(request.tokens()) == request.n
        assert isinstance(request.req_id(), str)
    elif request.op == rpc.OP_STATS:
        assert not first and request.n == 0 and request.body == b""
    else:
        assert request.op == rpc.OP_CLEAR and not first and request.n in (0, 1) and request.body == b""


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode, stream = data[0], io.BytesIO(data[1:])
    first = bool(mode & 1)
    max_tokens = TOKEN_LIMITS[(mode >> 1) % len(TOKEN_LIMITS)]
    read = reader(stream)
    try:
        for _ in range(MAX_FRAMES):
            request = rpc.read_request(read, first, max_tokens)
            check(request, first, max_tokens)
            first = False
    except (rpc.FrameError, rpc.PeerClosed):
        pass  # the declared outcomes: the server closes that connection


def main() -> None:
    atheris.Setup(with_scratch_corpus(sys.argv, "lookup-frames"), TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
