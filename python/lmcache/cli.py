"""The `lmcache` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {
        "demo": "run vLLM with and without lmcache on long-document QA and compare time to first token",
        "config": "list the configuration keys",
        "version": "print the version",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: lmcache {" + ",".join(commands) + "} ...\n")
        for name, doc in commands.items():
            print(f"  {name:8} {doc}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from lmcache.demo import run_demo

        return run_demo(rest)
    if cmd == "config":
        from lmcache.config import Config

        print(Config.describe())
        return 0
    import lmcache

    print(lmcache.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
