"""Atomic file writes: a crash or kill at any moment leaves the old file or the new one, never a torn one."""
from __future__ import annotations

import glob
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from geomodel.errors import GeomodelError

# Temporary files are named .NAME.HOST.PID.XXXX.tmp, so a later save can tell a dead writer's leftovers
# (removed) from a live writer's file in progress (left alone).
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], *,
                 error: type[GeomodelError] = GeomodelError) -> None:
    """Call `write(fh)` on a temporary file in `path`'s folder, fsync, then rename it over `path`.

    The temporary file of a writer killed mid-save is removed by the next save of `path`.
    A failed write (disk full, no permission) raises `error`; the old file is kept.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise error(f"could not write {path} ({exc.strerror or exc}); "
                        "any earlier version of it is unchanged") from exc
        raise


def atomic_write_text(path: str | Path, text: str, *, error: type[GeomodelError] = GeomodelError) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), error=error)


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files of `path` left on this machine by writers that no longer run."""
    prefix = f".{path.name}.{_HOST}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
            tmp.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
