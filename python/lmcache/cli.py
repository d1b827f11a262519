"""The `lmcache` command: run the demo and benchmarks, operate a running
cache through its control API, serve a control API of its own, show the
configuration.

Every error is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional


class CliError(Exception):
    """A failure to report in one line."""


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    if argv and argv[0] in ("demo", "bench"):
        # They parse their own options (and --help).
        return _run_delegated(argv[0], argv[1:])
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except CliError as e:
        print(f"lmcache {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - lmcache's own errors and the OS's are one line
        from lmcache.errors import LMCacheError

        if isinstance(e, (LMCacheError, OSError, ValueError)):
            print(f"lmcache {args.command}: {e}", file=sys.stderr)
            return 1
        raise


def _run_delegated(command: str, rest: list[str]) -> int:
    if command == "demo":
        from lmcache.demo import run_demo

        return run_demo(rest)
    from lmcache.bench_cli import main as bench_main

    return bench_main(rest)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmcache", description="lmcache: a KV-cache layer for LLM serving.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="vLLM with and without lmcache on long-document QA: time to first token "
                                "(lmcache demo --help)")
    sub.add_parser("bench", help="run the benchmarks, with charts (lmcache bench --help)")

    def client(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("--url", help="the control API (default: http://control_host:control_port of the "
                                     "configuration)")
        c.add_argument("--token", help="bearer token (default: control_token / control_token_file of the "
                                       "configuration)")
        c.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
        return c

    def with_tokens(c: argparse.ArgumentParser) -> None:
        group = c.add_mutually_exclusive_group(required=True)
        group.add_argument("--tokens", help="token ids, comma-separated")
        group.add_argument("--tokens-file", help="a file of token ids (a JSON list, or separated by commas or "
                                                 "spaces); - for stdin")
        c.add_argument("--cache", default="main", help="which cache of the process (default: main)")

    c = client("stats", "print the counters of every cache of a process")
    c.set_defaults(run=_stats)
    for name, run, help, flag in (
            ("lookup", _lookup, "how many leading tokens of a prompt each tier holds", None),
            ("pin", _pin, "protect a prompt's cached chunks from eviction (--unpin: release them)", "--unpin"),
            ("prefetch", _prefetch, "bring a prompt's cached KV into host memory now", None),
            ("evict", _evict, "drop a prompt's chunks from host memory (--include-disk: from disk too)",
             "--include-disk")):
        c = client(name, help)
        with_tokens(c)
        if flag:
            c.add_argument(flag, action="store_true")
        c.set_defaults(run=run)
    c = client("clear", "drop every chunk (in use and pinned ones stay)")
    c.add_argument("--model", help="only the caches of this model id")
    c.add_argument("--tenant", help="only the caches of this tenant (its tenant_salt)")
    c.add_argument("--keep-disk", action="store_true", help="leave the disk tier alone")
    c.set_defaults(run=_clear)
    c = client("health", "whether a process serves its control API")
    c.set_defaults(run=lambda a: _print(_request(a, "GET", "/health")))

    s = sub.add_parser("serve-control", help="own a cache (from the configuration) and serve its control API "
                                             "and metrics until interrupted",
                       description="Opens a cache from the configuration (LMCACHE_CONFIG_FILE, LMCACHE_* "
                                   "variables), for example on a disk directory, and serves the control API "
                                   "and Prometheus metrics for it.")
    s.add_argument("--host", help="address to bind (default: control_host)")
    s.add_argument("--port", type=int, help="port (default: control_port, or 8000 when that is 0)")
    s.add_argument("--kv-shape", help="layers,kv_heads,head_dim,dtype of the model whose chunks the cache "
                                      "holds (needed for lookups by token ids), e.g. 32,8,128,bfloat16")
    s.set_defaults(run=_serve_control)

    sv = sub.add_parser("server", help="the node's cache: serve one cache (shared memory, disk, remote) to every "
                                       "engine on the node until SIGTERM",
                        description="Owns the host pool in shared memory, the disk tier and the remote tier from "
                                    "the configuration; engines with server_socket set attach to it.")
    sv.add_argument("--socket", help="the Unix socket (default: server_socket of the configuration)")
    sv.set_defaults(run=_server)

    cf = sub.add_parser("config", help="print the effective configuration and where each value came from")
    cf.add_argument("--file", help="a YAML file (default: LMCACHE_CONFIG_FILE)")
    cf.add_argument("--keys", action="store_true", help="list every key with its type, default and doc instead")
    cf.add_argument("--json", action="store_true", help="as JSON")
    cf.set_defaults(run=_config)

    v = sub.add_parser("version", help="print the version")
    v.set_defaults(run=lambda a: print(_version()) or 0)
    return p


# ---------------------------------------------------------------- commands
def _stats(args) -> int:
    caches = _request(args, "GET", "/stats")["caches"]
    if not caches:
        print("(no caches)")
    for name, stats in caches.items():
        print(f"{name}:")
        for key, value in stats.items():
            print(f"  {key:34} {value}")
    return 0


def _lookup(args) -> int:
    r = _request(args, "POST", "/lookup", {"tokens": _tokens(args), "cache": args.cache})
    print(f"{r['hit_tokens']} of {r['tokens']} tokens cached (chunk size {r['chunk_size']}): host memory "
          f"{r['host_tokens']}, disk {r['disk_tokens']}, remote {r['remote_tokens']}")
    return 0


def _pin(args) -> int:
    r = _request(args, "POST", "/unpin" if args.unpin else "/pin", {"tokens": _tokens(args), "cache": args.cache})
    print(f"{'unpinned' if args.unpin else 'pinned'} {r['chunks']} chunks")
    return 0


def _prefetch(args) -> int:
    r = _request(args, "POST", "/prefetch", {"tokens": _tokens(args), "cache": args.cache})
    print(f"{r['host_tokens']} leading tokens in host memory")
    return 0


def _evict(args) -> int:
    r = _request(args, "POST", "/evict", {"tokens": _tokens(args), "cache": args.cache,
                                           "include_disk": args.include_disk})
    print(f"removed {r['removed']} records")
    return 0


def _clear(args) -> int:
    body: dict = {"include_disk": not args.keep_disk}
    if args.model is not None:
        body["model"] = args.model
    if args.tenant is not None:
        body["tenant"] = args.tenant
    r = _request(args, "POST", "/clear", body)
    print(f"removed {r['removed']} records from {', '.join(r['caches']) or 'no cache'}")
    return 0


def _config(args) -> int:
    from lmcache.config import Config, _SPECS, redact_url

    if args.keys:
        print(Config.describe())
        return 0
    config, sources = Config.load_with_sources(args.file)
    rows = []
    for key, value in config.items():
        if _SPECS[key].metadata["secret"]:
            value = "(set)" if value else ""
        elif key == "remote_url" and value:
            value = redact_url(value)
        rows.append((key, value, sources[key]))
    if args.json:
        print(json.dumps({k: {"value": v, "from": src} for k, v, src in rows}, indent=2))
        return 0
    width = max(len(k) for k, _, _ in rows)
    for key, value, src in rows:
        print(f"{key:{width}}  {json.dumps(value):28}  {src}")
    return 0


def _serve_control(args) -> int:
    import signal
    import threading

    from lmcache.config import Config
    from lmcache.control import registry
    from lmcache.control.server import ControlServer
    from lmcache.engine import CacheEngine

    config = Config.load()
    # This process serves the API itself: the engine must not start another.
    engine = CacheEngine(config.replace(control_port=0))
    if args.kv_shape:
        layers, heads, head_dim, dtype = _kv_shape(args.kv_shape)
        engine.set_kv_shape(num_layers=layers, num_heads=heads, head_dim=head_dim, dtype=dtype)
    host = args.host or config.control.control_host
    port = args.port if args.port is not None else (config.control.control_port or 8000)
    server = ControlServer(registry(), host, port, config.control.token())
    if not server.wait_started():
        raise CliError(f"the control API did not start on {host}:{port}")
    print(f"lmcache: control API and metrics on {server.url} (disk tier: {engine.disk_backend or 'off'}); "
          "Ctrl-C stops", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    engine.close()
    return 0


def _server(args) -> int:
    from lmcache.config import Config
    from lmcache.server.daemon import serve

    config = Config.load()
    path = args.socket or config.server.server_socket
    if not path:
        raise CliError("no socket given: pass --socket PATH or set server_socket (LMCACHE_SERVER_SOCKET)")
    return serve(config, path)


# ---------------------------------------------------------------- helpers
def _version() -> str:
    import lmcache

    return lmcache.__version__


def _print(obj) -> int:
    print(json.dumps(obj, indent=2))
    return 0


def _kv_shape(text: str) -> tuple[int, int, int, str]:
    parts = [p.strip() for p in text.split(",")]
    try:
        layers, heads, head_dim = (int(p) for p in parts[:3])
        (dtype,) = parts[3:]
    except ValueError:
        raise CliError(f"--kv-shape {text!r}: expected layers,kv_heads,head_dim,dtype (32,8,128,bfloat16)") from None
    return layers, heads, head_dim, dtype


def _tokens(args) -> list[int]:
    if args.tokens is not None:
        text, what = args.tokens, "--tokens"
    else:
        what = f"--tokens-file {args.tokens_file}"
        if args.tokens_file == "-":
            text = sys.stdin.read()
        else:
            with open(args.tokens_file, encoding="utf-8") as f:
                text = f.read()
    text = text.strip()
    try:
        ids = json.loads(text) if text.startswith("[") else [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise CliError(f"{what}: not a list of token ids") from None
    if not isinstance(ids, list) or not all(isinstance(i, int) and 0 <= i < 1 << 32 for i in ids):
        raise CliError(f"{what}: token ids must be integers from 0 to 2**32-1")
    return ids


def _request(args, method: str, path: str, body: Optional[dict] = None) -> dict:
    import urllib.error
    import urllib.request

    url, token = _endpoint(args)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail")
        except ValueError:
            detail = None
        if isinstance(detail, list):  # a validation error: the first problem is enough
            detail = "; ".join(str(d.get("msg", d)) for d in detail[:1])
        raise CliError(f"{url}{path}: HTTP {e.code}: {detail or e.reason}") from None
    except urllib.error.URLError as e:
        raise CliError(f"cannot reach the control API at {url}: {e.reason}") from None
    except TimeoutError:
        raise CliError(f"the control API at {url} did not answer within {args.timeout:g}s") from None


def _endpoint(args) -> tuple[str, str]:
    from lmcache.config import Config

    config = Config.load()
    token = args.token or config.control.token()
    if args.url:
        return args.url.rstrip("/"), token
    if not config.control.control_port:
        raise CliError("no control API given: pass --url http://HOST:PORT, or set control_port "
                       "(LMCACHE_CONTROL_PORT) as the cache's process has it")
    host = config.control.control_host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{config.control.control_port}", token


if __name__ == "__main__":
    sys.exit(main())
