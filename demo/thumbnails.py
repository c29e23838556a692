"""Thumbnails the app serves as files instead of inlining them in its pages.

An inlined thumbnail costs ~4 KB of base64 in the page per photo (300 validation photos made a
3.4 MB `/config`); served, it costs a short URL, and the browser fetches it only when a popup
shows it. The JPEGs are written once, at start-up, into a fresh folder inside Gradio's cache
folder: the one place Gradio's file route already serves (uploads live there), so the app opens
no new path (`allowed_paths` stays empty). Files are named by number; no user text reaches a
path or a URL.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from demo.maps import thumbnail_jpeg

FILE_ROUTE = "gradio_api/file="  # relative: resolved against the app's page, so it works under any root path


def gradio_cache_folder() -> Path:
    """Where Gradio keeps (and serves) the files it handles: $GRADIO_TEMP_DIR or <tmp>/gradio."""
    from gradio.utils import get_cache_folder

    return Path(get_cache_folder())


class ThumbnailFolder:
    """JPEG thumbnails in a folder of their own inside Gradio's cache, each with the URL that serves it."""

    def __init__(self, parent: str | Path | None = None, *, max_px: int = 96):
        parent = Path(parent) if parent is not None else gradio_cache_folder()
        parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="geomodel-thumbs-", dir=parent)).resolve()
        self.max_px = max_px
        self._count = 0

    def add(self, image: Image.Image) -> str:
        """Write `image`'s thumbnail; returns its relative URL (for `MapPoint.thumbnail`)."""
        self._count += 1
        path = self.folder / f"{self._count:06d}.jpg"
        path.write_bytes(thumbnail_jpeg(image, self.max_px))
        return self.url(path)

    @staticmethod
    def url(path: Path) -> str:
        return FILE_ROUTE + quote(str(path), safe="/")

    def remove(self) -> None:
        """Delete the folder and its thumbnails (when the app shuts down)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def __len__(self) -> int:
        return self._count
