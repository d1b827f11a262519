"""Asynchronous stores on the worker side: begun on vLLM's thread after the
forward pass, finished (published) on a thread of their own, in the order
they were begun, so vLLM's thread never waits for a copy to the host tier.

vLLM keeps a finished request's blocks while its stores may still read them:
the scheduler side answers request_finished with True for every request it
scheduled a store for, and this class names such a request in get_finished
once none of its stores is in flight. Both sides track the same requests
(those with store_until > 0 in the step's metadata), whatever happens to the
store itself, so every held request is released exactly once.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)


class AsyncStores:
    def __init__(self, on_stored: Callable[[int], None]) -> None:
        """on_stored(tokens) runs on the finisher thread after each store (0 when it failed)."""
        self._on_stored = on_stored
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}  # req_id -> stores begun and not finished
        self._with_stores: set[str] = set()   # requests that had stores and are not finished
        self._finishing: set[str] = set()     # finished requests whose stores may still run
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lmcache-store-finisher", daemon=True)
        self._thread.start()

    def expect(self, req_id: str) -> None:
        """req_id has a store this step (as the scheduler side sees it), begun or not."""
        with self._lock:
            self._with_stores.add(req_id)

    def submit(self, req_id: str, store: Any) -> None:
        """A begun store (lmcache.engine.PendingStore) to finish."""
        with self._lock:
            self._in_flight[req_id] = self._in_flight.get(req_id, 0) + 1
        if self._closed:  # no thread any more: finish here
            self._finish(req_id, store)
            return
        self._queue.put((req_id, store))

    def finished(self, finished_req_ids: set[str]) -> Optional[set[str]]:
        """Of the requests vLLM finished, those whose blocks it may free now."""
        with self._lock:
            for req_id in finished_req_ids:
                if req_id in self._with_stores:
                    self._with_stores.discard(req_id)
                    self._finishing.add(req_id)
            done = {r for r in self._finishing if r not in self._in_flight}
            self._finishing -= done
        return done or None

    def holding(self) -> int:
        """Requests whose blocks vLLM holds (or will hold) for these stores."""
        with self._lock:
            return len(self._with_stores) + len(self._finishing)

    def drain(self) -> None:
        """Blocks until every store submitted so far is finished."""
        self._queue.join()

    def close(self) -> None:
        """Finishes what is queued, then stops the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._finish(*item)
            finally:
                self._queue.task_done()  # always, or drain() would wait forever

    def _finish(self, req_id: str, store: Any) -> None:
        stored = 0
        try:
            stored = store.finish()
        except Exception as e:  # a failed store only costs a future hit
            logger.warning("lmcache store for %s failed: %s", req_id, e)
        finally:
            # Always: vLLM holds the request's blocks until this store is counted out.
            with self._lock:
                left = self._in_flight.get(req_id, 1) - 1
                if left > 0:
                    self._in_flight[req_id] = left
                else:
                    self._in_flight.pop(req_id, None)
            try:
                self._on_stored(stored)
            except Exception as e:
                logger.warning("lmcache: store accounting failed: %s", e)
