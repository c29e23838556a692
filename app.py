"""`python app.py`: serve the geomodel demo (Gradio). Importing this file starts nothing.

Settings come from flags or environment variables (`python app.py --help`); with none, the
bundled synthetic demo in `assets/` is served on http://127.0.0.1:7860.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the app works offline; send nothing home
# Before torch loads: idle OpenMP threads sleep instead of spinning, which on a shared 2-vCPU
# Space kept inference at 1-3 photos/s instead of 20-29 (bench/inference.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build(argv: Sequence[str] | None = None):
    """Parse settings, load the model once, and return `(blocks, config)` with the queue set up."""
    from demo.settings import config_from_args

    config = config_from_args(argv)  # bad settings and Hub errors are told before Gradio and torch load
    from demo.ui import build_app, load_context

    blocks = build_app(load_context(config))
    blocks.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size)
    return blocks, config


def launch(blocks, config, **overrides) -> str:
    """Serve `blocks` with the settings of `config` (overrides win); returns the local URL.

    Blocks until the server stops unless `prevent_thread_lock=True` (tests, benchmarks).
    """
    from demo.ui import launch_kwargs

    _, url, _ = blocks.launch(**{**launch_kwargs(config), **overrides})
    return url


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM; then uploads, cached files and the work folder are deleted."""
    from demo.server import serve, stop_on_sigterm
    from demo.ui import launch_kwargs
    from geomodel.errors import GeomodelError
    from geomodel.runtime import keep_freed_memory

    keep_freed_memory()  # batches of photos reuse freed memory instead of faulting in fresh pages
    stop_on_sigterm()  # from the start: a stop during model loading still runs the clean-up
    try:
        blocks, config = build(argv)
    except (GeomodelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    serve(blocks, launch_kwargs(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
