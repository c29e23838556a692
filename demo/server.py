"""Serving the app until it is stopped, then leaving nothing behind.

Python's default SIGTERM handling kills the process on the spot: no `finally`, no `atexit`, so
the app's work folder and every upload stayed in the system temp folder after `docker stop`
or `systemctl stop`. Here SIGTERM stops the app exactly like Ctrl-C; the server is closed, the
files Gradio cached for this app (uploads, download copies, example thumbnails) are deleted with
the folders Gradio made for them, and `atexit` removes the app's own work folder.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any


def stop_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread, as Ctrl-C does."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def serve(blocks: Any, launch_kwargs: dict) -> None:
    """Launch `blocks` and block until Ctrl-C or SIGTERM, then close it and delete its cached files.

    A second stop signal while it cleans up (an impatient Ctrl-C, `docker stop` repeating SIGTERM)
    is ignored: it would otherwise cut the clean-up short with a traceback and leave the uploads.
    """
    stop_on_sigterm()
    interrupted = False
    try:
        blocks.launch(**launch_kwargs, prevent_thread_lock=True)
        while blocks.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        previous = _ignore_stop_signals()  # first, before anything that takes time
        if interrupted:
            print("stopping: closing the server and deleting its uploads and cached files", flush=True)
        try:
            cached = cached_files(blocks)
            blocks.close(verbose=False)
            remove_cached(cached, Path(blocks.GRADIO_CACHE))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _ignore_stop_signals() -> dict:
    """Ignore SIGTERM and SIGINT; returns the handlers they had."""
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}


def cached_files(blocks: Any) -> set[Path]:
    """Every file Gradio cached for this app: its uploads and the files its components served."""
    return {Path(f) for files in list(getattr(blocks, "temp_file_sets", [])) for f in list(files)}


def remove_cached(files: set[Path], cache: Path) -> None:
    """Delete `files`, then each folder Gradio made for one of them (`CACHE/<hash>/`) once empty.

    Folders are only removed when empty: an identical file uploaded to another app that shares
    the cache folder lives in the same `<hash>/` folder.
    """
    for path in files:
        path.unlink(missing_ok=True)
    cache = Path(os.path.realpath(cache))
    for folder in {Path(os.path.realpath(p.parent)) for p in files}:
        if folder.parent == cache:
            try:
                os.rmdir(folder)
            except OSError:  # not empty (another app's file), or already gone
                pass
