"""lmcache's logger tree: every module logs under "lmcache", at the level of
the config key log_level.

Expected failures (a miss, a chunk that vanished, a server that went away)
are one-line warnings or debug messages, never tracebacks; a traceback means
a bug worth reporting.
"""

from __future__ import annotations

import logging

ROOT = "lmcache"
_FORMAT = "%(levelname)s %(asctime)s [lmcache] %(message)s"


def configure(level: str) -> None:
    """Sets the tree's level; gives it a handler of its own only when nothing
    up the tree prints (an engine such as vLLM configures its own loggers,
    not the root), so messages are shown once either way."""
    tree = logging.getLogger(ROOT)
    tree.setLevel(getattr(logging, level.upper()))
    if tree.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%m-%d %H:%M:%S"))
    tree.addHandler(handler)
