"""The app's model work, without Gradio: photos in, result rows (see `demo.results`) out.

Everything goes through `geomodel`: images are opened by `load_image` (its errors become the
row's `error`), predictions come from the one `Predictor` the app loaded.
"""
from __future__ import annotations

import collections
import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from PIL import Image

from demo.maps import thumbnail_data_uri
from geomodel.collect.exif import exif_gps
from geomodel.data.images import PixelBudget, decoded_size, load_image
from geomodel.errors import GeomodelError
from geomodel.geo import distance
from geomodel.predictor import Predictor
from geomodel.runtime import release_memory

MAX_REQUEST_PIXELS = 256_000_000  # pixels one request may decode (4 photos at the per-photo limit)
SMALL_DECODE = 4_000_000  # photos decoded at up to this many pixels take the small-photo lane

Progress = Callable[[int, int], None]  # (photos done, photos in all)


class TooManyPhotos(ValueError):
    """More photos in one request than the app accepts."""


class Turns:
    """Turns in arrival order (a FIFO semaphore): whoever asked first goes next, `slots` at a time.

    A request that asks for a turn while a 32-photo request runs goes before that request's
    next photo, not after its 32nd (the big request asks again for each photo).
    """

    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self._free = slots
        self._line: collections.deque[object] = collections.deque()
        self._changed = threading.Condition()

    @property
    def waiting(self) -> int:
        """Turns asked for and not yet started."""
        with self._changed:
            return len(self._line)

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        ticket = object()
        with self._changed:
            self._line.append(ticket)
            self._changed.wait_for(lambda: self._free > 0 and self._line[0] is ticket)
            self._line.popleft()
            self._free -= 1
            self._changed.notify_all()  # with more slots, the next in line may start too
        try:
            yield
        finally:
            with self._changed:
                self._free += 1
                self._changed.notify_all()


@dataclass
class CpuTurns:
    """The app's queues for CPU work, shared by all requests.

    `model`: one batch through the model per turn. Decoding goes in two lanes, one photo at a
    time each: photos decoded at up to `SMALL_DECODE` pixels in `small` (milliseconds each),
    bigger ones in `large` (a 64-megapixel PNG takes seconds). So at most one big decoded buffer
    exists at a time, and a normal photo never waits behind a big one.
    """

    model: Turns
    small: Turns
    large: Turns

    @classmethod
    def create(cls, model_slots: int = 1) -> "CpuTurns":
        return cls(Turns(model_slots), Turns(), Turns())


def predict_photos(predictor: Predictor, paths: Sequence[str | os.PathLike], *, top_k: int = 3,
                   max_files: int = 32, max_bytes: int | None = None, max_pixels: int | None = MAX_REQUEST_PIXELS,
                   thumbnails: bool = True, progress: Progress | None = None,
                   turns: CpuTurns | None = None) -> list[dict]:
    """Predict every photo; one row per path, in order. A bad photo never costs the others.

    Raises `TooManyPhotos` past `max_files`. Files over `max_bytes` are refused unread; photos
    past the request's `max_pixels` (counted with `decoded_size`) are refused from their
    header. Photos are decoded one at a time, straight down to the model's needs
    (`Predictor.decode_side`), in `turns` shared with other requests, and memory is handed back
    to the system when the request ends.
    """
    paths = [Path(p) for p in paths]
    if len(paths) > max_files:
        raise TooManyPhotos(f"{len(paths)} photos were sent; the limit is {max_files} per request. "
                            "Send them in smaller batches.")
    budget = PixelBudget(max_pixels) if max_pixels else None
    rows: list[dict | None] = [None] * len(paths)
    batch: list[tuple[int, Image.Image]] = []
    try:
        for i, path in enumerate(paths):
            try:
                batch.append((i, _open(predictor, path, max_bytes, budget, turns)))
            except (GeomodelError, OSError) as exc:
                rows[i] = _failed(path, _strip_path(str(exc), path))
            if batch and (len(batch) == predictor.batch_size or i == len(paths) - 1):
                with _turn(turns and turns.model):
                    _predict_batch(predictor, paths, batch, rows, top_k=top_k, thumbnails=thumbnails)
                batch = []
            if progress is not None:
                progress(i + 1, len(paths))
    finally:
        del batch
        release_memory()
    return rows  # type: ignore[return-value]


def _turn(turns: Turns | None) -> contextlib.AbstractContextManager:
    return turns.turn() if turns is not None else contextlib.nullcontext()


def _open(predictor: Predictor, path: Path, max_bytes: int | None, budget: PixelBudget | None,
          turns: CpuTurns | None) -> Image.Image:
    """One photo, decoded down to the model's needs in its lane; refused unread past the byte or pixel limits."""
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise GeomodelError(f"the file is {size / 2**20:.1f} MB; this app accepts photos up to "
                            f"{max_bytes / 2**20:.0f} MB")
    width, height = decoded_size(path, shorter_side=predictor.decode_side)
    if budget is not None:
        budget.take(width * height, str(path))
    lane = None if turns is None else turns.large if width * height > SMALL_DECODE else turns.small
    with _turn(lane):
        return load_image(path, shorter_side=predictor.decode_side)


def _predict_batch(predictor: Predictor, paths: list[Path], batch: list[tuple[int, Image.Image]],
                   rows: list[dict | None], *, top_k: int, thumbnails: bool) -> None:
    # `probs` holds every region's probability (the map shades the regions by them)
    preds = predictor.predict([image for _, image in batch], top_k=top_k)
    for (i, image), pred in zip(batch, preds):
        row = {**pred, "file": paths[i].name, "gps_latitude": None, "gps_longitude": None, "gps_error": None,
               "thumbnail": thumbnail_data_uri(image) if thumbnails else None}
        gps = exif_gps(paths[i]) if predictor.frame == "wgs84" else None
        if gps is not None:
            row["gps_latitude"], row["gps_longitude"] = gps
            row["gps_error"] = float(distance(predictor.frame, gps[0], gps[1], row["latitude"], row["longitude"]))
        rows[i] = row


def _failed(path: Path, reason: str) -> dict:
    """The Predictor's failure row (one shape for both), plus the app's own columns."""
    return {**Predictor._failed(path.name, reason), "gps_latitude": None, "gps_longitude": None,
            "gps_error": None, "thumbnail": None}


def _strip_path(message: str, path: Path) -> str:
    """Messages name the server-side path (an upload folder); the user knows the photo by its name."""
    return message.replace(f"{path}: ", "").replace(str(path), path.name)
