"""The caches of this process, by name, for the control API and metrics.

Held weakly: registering a cache never keeps it (and its host memory) alive
after its owner drops it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any


class CacheRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caches: dict[str, weakref.ref] = {}  # name -> CacheEngine

    def add(self, name: str, engine: Any) -> str:
        """Registers `engine`; returns the name it got (`name`, or `name-2`, ... when taken)."""
        with self._lock:
            self._prune()
            unique, n = name, 1
            while unique in self._caches:
                n += 1
                unique = f"{name}-{n}"
            self._caches[unique] = weakref.ref(engine)
            return unique

    def remove(self, engine: Any) -> None:
        with self._lock:
            for name, ref in list(self._caches.items()):
                if ref() is engine or ref() is None:
                    del self._caches[name]

    def items(self) -> list[tuple[str, Any]]:
        """(name, cache) of every live cache."""
        with self._lock:
            live = [(name, ref()) for name, ref in self._caches.items()]
        return [(name, e) for name, e in live if e is not None]

    def get(self, name: str) -> Any:
        with self._lock:
            ref = self._caches.get(name)
        return ref() if ref is not None else None

    def __len__(self) -> int:
        return len(self.items())

    def _prune(self) -> None:
        for name in [n for n, ref in self._caches.items() if ref() is None]:
            del self._caches[name]


_registry = CacheRegistry()


def registry() -> CacheRegistry:
    """This process's registry."""
    return _registry
