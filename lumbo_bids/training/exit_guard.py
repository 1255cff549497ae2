"""Clean interpreter exit while the training streams run Python code in tf.data threads."""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class ExitGuard:
    """Stop the streams and wait for their Python calls to finish before the interpreter exits.

    A tf.data thread that enters Python while the interpreter finalises is terminated, and the
    iterator's destructor then waits for it forever: a process whose iterator is still alive at
    exit (a global, the traceback of an interrupted ``fit``) would hang instead of exiting.
    """

    def __init__(self) -> None:
        self.exiting = threading.Event()
        self._lock = threading.Lock()
        self._active, self._last = 0, 0.0

    @contextmanager
    def call(self) -> Iterator[None]:
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active, self._last = self._active - 1, time.monotonic()

    def drain(self, quiet: float = 0.25, timeout: float = 10.0) -> None:
        self.exiting.set()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if self._active == 0 and time.monotonic() - self._last > quiet:
                    return
            time.sleep(0.02)


#: the guard of every stream and augmentation call, drained at exit
GUARD = ExitGuard()
atexit.register(GUARD.drain)
