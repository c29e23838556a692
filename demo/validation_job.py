"""The explorer's predictions, computed in a background thread so that the app starts at once.

Predicting a validation set takes time in proportion to its size (3,000 photos: minutes on a
small CPU); the Predict tab must not wait for it. The job runs once, at start-up, and is only
read afterwards: its progress while it runs, then its `ValidationSet` (or the one-line problem
that stopped it).
"""
from __future__ import annotations

import threading
from typing import Callable

from demo.validation import ValidationSet
from geomodel.errors import GeomodelError

Progress = Callable[[int, int], None]  # (photos done, photos in all)
_STOP_WAIT_S = 60  # how long a stopping app waits for the chunk of photos being predicted


class _Stopped(Exception):
    """Raised from the progress callback, between two chunks, when the app is stopping."""


class ValidationJob:
    """`compute(progress)` run once in a daemon thread; `total` photos to predict."""

    def __init__(self, compute: Callable[[Progress], ValidationSet], total: int):
        self.total = total
        self.done_photos = 0
        self._result: ValidationSet | None = None
        self._problem: str | None = None
        self._finished = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(compute,), name="geomodel-validation", daemon=True)
        self._thread.start()

    def _run(self, compute: Callable[[Progress], ValidationSet]) -> None:
        try:
            self._result = compute(self._progress)
        except _Stopped:
            self._problem = "the app stopped before the validation set was predicted"
        except GeomodelError as exc:
            self._problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - the explorer says why; the rest of the app keeps working
            self._problem = f"the validation set could not be predicted ({type(exc).__name__}: {exc})"
        finally:
            self._finished.set()

    def _progress(self, done: int, total: int) -> None:
        self.done_photos, self.total = done, total
        if self._stopping.is_set():
            raise _Stopped

    def stop(self, timeout: float = _STOP_WAIT_S) -> bool:
        """Stop after the chunk being predicted and wait for the thread (at exit: a process that ends
        while torch runs in a daemon thread is aborted, 'terminate called without an active
        exception', and skips the rest of its clean-up). False if it was still running at `timeout`."""
        self._stopping.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def ready(self) -> bool:
        """Finished, with a result or a problem."""
        return self._finished.is_set()

    @property
    def result(self) -> ValidationSet | None:
        return self._result

    @property
    def problem(self) -> str | None:
        return self._problem

    def wait(self, timeout: float | None = None) -> bool:
        """Block until finished (tests, benchmarks); False if `timeout` passed first."""
        return self._finished.wait(timeout)

    def status(self) -> str:
        """One line for the explorer while it waits."""
        return (f"Predicting the validation set: {self.done_photos:,} of {self.total:,} photos done. "
                "The explorer appears here when they are all predicted.")
