"""Finishes begun stores (lmcache.engine.PendingStore) on a thread of its
own, in the order they were begun, so that the worker thread that began them
never waits for a copy to the host tier."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

logger = logging.getLogger(__name__)


class StoreFinisher:
    def __init__(self, on_done: Callable[[str, int], None]) -> None:
        """on_done(req_id, tokens stored) runs on the finisher thread after
        each store, failed ones included (0 tokens)."""
        self._on_done = on_done
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lmcache-store-finisher", daemon=True)
        self._thread.start()

    def submit(self, req_id: str, store: Any) -> None:
        self._queue.put((req_id, store))

    def drain(self) -> None:
        """Blocks until every store submitted so far is finished."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                req_id, store = item
                stored = 0
                try:
                    stored = store.finish()
                except Exception as e:  # a failed store only costs a future hit
                    logger.warning("lmcache store for %s failed: %s", req_id, e)
                self._on_done(req_id, stored)
            finally:
                self._queue.task_done()
