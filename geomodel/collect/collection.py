"""Turn photos, walk videos and labelled CSVs into one collection of positioned photos.

`Collector` takes sources one by one and writes the images of the collection into a folder:
photos are copied byte for byte (never modified), video frames are written as JPEG. Each photo
gets a position from its EXIF GPS, else from the GPS tracks at its capture time; each frame from
the tracks at its time; each CSV row from the CSV. Anything that cannot be used is recorded with
the reason (`LeftOut`) and the rest goes on. `write_collection` then writes the project's
``labels.csv``, ``regions.geojson`` and ``summary.json`` beside the images, and `staging` makes
the whole output appear at once (a killed run never leaves a half-written collection at OUT).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from geomodel.collect.exif import check_position, read_photo_meta
from geomodel.collect.tracks import Tracks, to_epoch, utc_text
from geomodel.collect.video import VIDEO_SUFFIXES, SampleReport, probe_video, sample_frames
from geomodel.errors import CollectError, GeomodelError

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif", ".avif"})
CSV_SUFFIXES = frozenset({".csv"})
LABEL_COLUMNS = ("filename", "latitude", "longitude", "Region_ID", "timestamp", "angle")

Log = Callable[[str], None]


@dataclass(frozen=True)
class CollectConfig:
    """How sources become positioned photos."""

    frame: str = "wgs84"  # coordinates: "wgs84" (photos, videos, GPS CSVs) or "planar" (CSV inputs only)
    every_m: float | None = 2.0  # video: a frame per this many metres walked (None: use every_s)
    every_s: float | None = None  # video: a frame per this many seconds instead
    time_offset: timedelta | None = None  # camera clock minus UTC; None: each photo's OffsetTimeOriginal, else 0
    video_start: dict[str, float] = field(default_factory=dict)  # video file name (or "") -> start, epoch s
    max_gap: float = 60.0  # seconds: no position between track points further apart than this
    max_side: int | None = 1280  # video frames larger than this are shrunk (pixels)
    jpeg_quality: int = 90  # video frames
    images: Path | None = None  # CSV inputs: the folder of their images (default: images/ beside the CSV)

    def __post_init__(self) -> None:
        if self.frame not in ("wgs84", "planar"):
            raise ValueError(f"frame={self.frame!r} is not valid; choose one of: wgs84, planar")
        if (self.every_m is None) == (self.every_s is None):
            raise ValueError("give exactly one of every_m (metres) and every_s (seconds)")
        for name in ("every_m", "every_s", "max_gap"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")


@dataclass
class Entry:
    """One photo of the collection."""

    filename: str  # its name in images/
    latitude: float  # degrees (wgs84) or y (planar)
    longitude: float  # degrees (wgs84) or x (planar)
    timestamp: str  # ISO 8601; ends in Z when the time is known in UTC, else the camera's clock
    angle: float | None  # camera heading, degrees clockwise from north
    source: str  # the input it came from (a photo path, "video.mp4 @ 12.40 s", "labels.csv line 7")
    located_by: str  # "exif", "track", "csv"
    kind: str  # "photo", "frame"


@dataclass(frozen=True)
class LeftOut:
    """An input (or part of one) that is not in the collection, and why."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class _Pending:
    """A photo waiting for a track position (it has a capture time but no GPS)."""

    path: Path
    utc: float  # capture time, epoch seconds (UTC)
    camera_time: datetime
    offset: timedelta
    angle: float | None
    why_no_gps: str


def expand_inputs(paths: Sequence[str | Path]) -> tuple[list[Path], list[LeftOut]]:
    """Files in the order given, folders walked (sorted, recursively, hidden entries skipped).

    Photos, videos and CSVs named on the command line are kept, and the photos and videos found
    in folders (a CSV is only read when named: a folder's labels file would add its photos twice).
    A named file that is none of them, or does not exist, is left out with the reason.
    """
    files, problems, seen = [], [], set()
    known, in_folders = PHOTO_SUFFIXES | VIDEO_SUFFIXES | CSV_SUFFIXES, PHOTO_SUFFIXES | VIDEO_SUFFIXES
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in in_folders
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                problems.append(LeftOut(str(p), "folder holds no photos or videos"))
        elif p.is_file():
            if p.suffix.lower() not in known:
                problems.append(LeftOut(str(p), f"not a photo, video or CSV (suffix {p.suffix or 'none'!r})"))
                continue
            found = [p]
        else:
            problems.append(LeftOut(str(p), "not found"))
            continue
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, problems


class Collector:
    """Gathers positioned photos into ``images_dir``; see the module docstring."""

    def __init__(self, images_dir: str | Path, cfg: CollectConfig, tracks: Tracks | None = None, *,
                 log: Log = print, progress: bool = True):
        self.images_dir = Path(images_dir)
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.tracks = tracks if tracks is not None else Tracks([])
        self.log = log
        self.progress = progress
        self.entries: list[Entry] = []
        self.left_out: list[LeftOut] = []
        self.videos: list[dict] = []  # per video: frames decoded, kept, left out
        self._names: set[str] = set()
        self._needed_track: list[tuple[float, float, str]] = []  # (first, last utc, how its clock was read)
        self._on_track = 0

    # ---------------------------------------------------------------------------------- photos

    def add_photos(self, paths: Sequence[Path]) -> None:
        """Photos: EXIF GPS, else the tracks at their capture time; copied unchanged."""
        from geomodel.data.images import verify_image

        pending: list[_Pending] = []
        for path in self._bar(paths, "photos", "photo"):
            try:
                verify_image(path)
                meta = read_photo_meta(path)
            except (GeomodelError, OSError) as exc:
                self._leave(path, _reason(exc, path))
                continue
            offset = self.cfg.time_offset if self.cfg.time_offset is not None else (meta.utc_offset or timedelta(0))
            utc = to_epoch(meta.taken - offset) if meta.taken is not None else None
            if meta.has_gps:
                self._add(path, meta.latitude, meta.longitude, _time_text(meta, self.cfg.time_offset), meta.angle,
                          "exif", "photo", copy_from=path)
                continue
            why = meta.gps_problem or "no GPS position in its EXIF"
            if utc is None:
                self._leave(path, f"{why}, and no capture time (DateTimeOriginal) to place it on a GPS track")
            elif not self.tracks:
                self._leave(path, f"{why}, and no GPS track (--gpx) to place it by its time")
            else:
                pending.append(_Pending(path, utc, meta.taken, offset, meta.angle, why))
        if pending:
            self._place_on_tracks(pending)

    def _place_on_tracks(self, pending: list[_Pending]) -> None:
        where = self.tracks.locate(np.array([p.utc for p in pending]))
        for p, lat, lon, ok in zip(pending, where.lat, where.lon, where.covered):
            clock = _clock_text(p.offset)
            self._needed_track.append((p.utc, p.utc, clock))
            if not ok:
                self._leave(p.path, f"{p.why_no_gps}, and no GPS track covers its time: taken "
                            f"{p.camera_time:%Y-%m-%d %H:%M:%S} by the camera's clock ({clock}); tracks: "
                            f"{self.tracks.describe_span()}")
                continue
            self._on_track += 1
            self._add(p.path, float(lat), float(lon), _iso_utc(p.utc), p.angle, "track", "photo", copy_from=p.path)

    # ---------------------------------------------------------------------------------- videos

    def add_video(self, path: Path) -> None:
        """A walk video: frames by distance walked (or time), placed on the tracks, written as JPEG."""
        record = {"video": str(path), "decoded": 0, "kept": 0, "left_out": 0}
        self.videos.append(record)
        try:
            info = probe_video(path)
        except CollectError as exc:
            self._leave(path, _reason(exc, path))
            return
        start = self.cfg.video_start.get(path.name, self.cfg.video_start.get("", info.start))
        if start is None:
            self._leave(path, "no creation time in its metadata to place its frames on a GPS track; "
                        "give --video-start")
            return
        if not self.tracks:
            self._leave(path, "its frames need a GPS track (--gpx) recorded during the walk")
            return
        end = start + (info.duration or 0.0)
        self._needed_track.append((start, end, "UTC, from the video's creation time"
                                   if path.name not in self.cfg.video_start and "" not in self.cfg.video_start
                                   else "UTC, from --video-start"))
        report = SampleReport()
        stem = _safe_stem(path)
        bar = self._bar(None, f"frames of {path.name}", "frame", total=_frame_count(info))
        try:
            for frame in sample_frames(path, start, self.tracks, every_m=self.cfg.every_m,
                                       every_s=self.cfg.every_s, max_side=self.cfg.max_side, report=report):
                name = self._unique(f"{stem}_{int(round(frame.offset * 1000)):08d}ms.jpg")
                frame.image.save(self.images_dir / name, quality=self.cfg.jpeg_quality)
                self.entries.append(Entry(name, frame.latitude, frame.longitude, _iso_utc(frame.time),
                                          frame.heading, f"{path} @ {frame.offset:.2f} s", "track", "frame"))
                bar.n = report.decoded
                bar.refresh()
        except CollectError as exc:
            bar.close()
            self._leave(path, _reason(exc, path))
            return
        bar.n = report.decoded
        bar.close()
        record.update(decoded=report.decoded, kept=report.kept, left_out=report.uncovered)
        if report.kept:
            self._on_track += 1
        if report.uncovered:
            lo, hi = report.uncovered_span
            what = (f"all {report.decoded} frames" if report.uncovered == report.decoded
                    else f"{report.uncovered} of {report.decoded} frames ({lo:.1f} s to {hi:.1f} s)")
            self._leave(path, f"{what} left out: no GPS track covers their time (video {utc_text(start)} to "
                        f"{utc_text(end)} UTC; tracks: {self.tracks.describe_span()})")
        if report.error:
            self._leave(path, f"{report.error}; the frames before it were kept")

    # ---------------------------------------------------------------------------------- CSVs

    def add_csv(self, path: Path) -> None:
        """A CSV with filename, latitude, longitude (any Region_ID is ignored: regions are made anew)."""
        from geomodel.data.images import verify_image
        from geomodel.data.labels import read_labels

        try:
            df = read_labels(path, need_region=False)
        except GeomodelError as exc:
            self._leave(path, _reason(exc, path))
            return
        images = Path(self.cfg.images) if self.cfg.images else _default_images(path)
        root = images.resolve()
        for row in self._bar(list(df.itertuples(index=False)), f"rows of {path.name}", "photo"):
            source = f"{path} line {int(row.row) + 2} ({row.filename})"
            image = images / str(row.filename)
            if not image.resolve().is_relative_to(root):
                self._leave(source, f"{row.filename!r} lies outside the images folder {images}")
                continue
            lat, lon = float(row.latitude), float(row.longitude)
            problem = check_position(lat, lon) if self.cfg.frame == "wgs84" else None
            if problem:
                self._leave(source, problem.replace("GPS ", "") + " (read as WGS84 degrees; --frame planar for other units)")
                continue
            try:
                verify_image(image)
            except (GeomodelError, OSError) as exc:
                self._leave(source, _reason(exc, image))
                continue
            angle = getattr(row, "angle", None)
            angle = float(angle) % 360.0 if angle is not None and math.isfinite(angle) else None
            stamp = getattr(row, "timestamp", None)
            stamp = "" if stamp is None or (isinstance(stamp, float) and math.isnan(stamp)) else str(stamp)
            self._add(image, lat, lon, stamp, angle, "csv", "photo", copy_from=image, source=source)

    # ---------------------------------------------------------------------------------- checks

    def time_overlap_problem(self) -> str | None:
        """One line when nothing that needed a GPS track fell within the tracks' times."""
        if not self._needed_track or self._on_track or not self.tracks:
            return None
        first = min(t[0] for t in self._needed_track)
        last = max(t[1] for t in self._needed_track)
        clocks = sorted({t[2] for t in self._needed_track})
        return (f"no photo or video time overlaps the GPS tracks: photos/videos {utc_text(first)} to {utc_text(last)} "
                f"UTC ({'; '.join(clocks)}), tracks {self.tracks.describe_span()}. EXIF times have no time zone "
                "and GPX times are UTC: if the camera was set to local time, give --time-offset with its UTC "
                "offset (e.g. --time-offset +05:30); for a video, --video-start")

    # ---------------------------------------------------------------------------------- helpers

    def _add(self, path: Path, lat: float, lon: float, stamp: str, angle: float | None, how: str, kind: str, *,
             copy_from: Path, source: str | None = None) -> None:
        name = self._unique(_safe_name(path))
        shutil.copyfile(copy_from, self.images_dir / name)
        self.entries.append(Entry(name, lat, lon, stamp, angle, source or str(path), how, kind))

    def _leave(self, source: Path | str, reason: str) -> None:
        self.left_out.append(LeftOut(str(source), reason))

    def _unique(self, name: str) -> str:
        stem, suffix = os.path.splitext(name)
        candidate, k = name, 1
        while candidate.lower() in self._names:
            k += 1
            candidate = f"{stem}_{k}{suffix}"
        self._names.add(candidate.lower())
        return candidate

    def _bar(self, items, desc: str, unit: str, total: int | None = None):
        from tqdm import tqdm

        return tqdm(items, desc=desc, unit=unit, total=total, disable=None if self.progress else True, leave=False)


# ------------------------------------------------------------------------------------------ output


def assign_regions(entries: Sequence[Entry], regions, source: str) -> tuple[list[Entry], np.ndarray, list[LeftOut]]:
    """Region ids (1-based) of the entries inside a region; the others are left out with the reason."""
    lat = np.array([e.latitude for e in entries], dtype=np.float64)
    lon = np.array([e.longitude for e in entries], dtype=np.float64)
    ids = np.asarray(regions.assign(lat, lon), dtype=np.int64) if len(entries) else np.zeros(0, dtype=np.int64)
    kept = [e for e, r in zip(entries, ids) if r > 0]
    left = [LeftOut(e.source, f"at {e.latitude:.6f}, {e.longitude:.6f}: outside every region of {source}")
            for e, r in zip(entries, ids) if r <= 0]
    return kept, ids[ids > 0], left


def write_collection(out_dir: str | Path, entries: Sequence[Entry], region_ids: np.ndarray, regions, *,
                     frame: str, left_out: Sequence[LeftOut], settings: dict, videos: Sequence[dict] = (),
                     images_dir: str | Path | None = None) -> dict:
    """Write ``labels.csv``, ``regions.geojson`` and ``summary.json`` into ``out_dir``; return the summary.

    Images in ``images/`` that did not make it into ``labels.csv`` (outside every region) are removed.
    """
    import csv

    out = Path(out_dir)
    images = Path(images_dir) if images_dir else out / "images"
    digits = 7 if frame == "wgs84" else 4
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        for e, r in zip(entries, region_ids):
            writer.writerow([e.filename, f"{e.latitude:.{digits}f}", f"{e.longitude:.{digits}f}", int(r), e.timestamp,
                             "" if e.angle is None else f"{e.angle:.1f}"])
    kept = {e.filename for e in entries}
    for f in images.iterdir():
        if f.name not in kept:
            f.unlink()
    regions.write(out / "regions.geojson")
    counts = np.bincount(np.asarray(region_ids, dtype=np.int64), minlength=len(regions.names) + 1)[1:]
    by_kind = {k: sum(e.kind == k for e in entries) for k in ("photo", "frame")}
    summary = {
        "frame": frame,
        "photos": len(entries),
        "from_photos": by_kind["photo"],
        "from_video_frames": by_kind["frame"],
        "located_by": {k: sum(e.located_by == k for e in entries) for k in ("exif", "track", "csv")},
        "regions": [{"region_id": i + 1, "name": n, "photos": int(c)} for i, (n, c) in enumerate(zip(regions.names, counts))],
        "left_out": [asdict(x) for x in left_out],
        "videos": list(videos),
        "settings": settings,
        "sources": [{"filename": e.filename, "source": e.source, "located_by": e.located_by} for e in entries],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


@contextmanager
def staging(out: str | Path, *, overwrite: bool = False, protect: Sequence[str | Path] = ()) -> Iterator[Path]:
    """A fresh folder beside ``out`` that becomes ``out`` only when the block completes.

    An existing ``out`` is refused unless ``overwrite``; then it is replaced only at the end, so a
    run that fails or is killed leaves it as it was. ``protect`` lists inputs that must not lie
    inside ``out`` (overwriting would delete them).
    """
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise CollectError(f"{out}: already exists; choose another --out, or give --overwrite to replace it "
                               "(it is replaced only once the new collection is complete)")
        if not out.is_dir():
            raise CollectError(f"{out}: exists and is not a folder")
        root = out.resolve()
        inside = [str(p) for p in protect if Path(p).resolve() == root or Path(p).resolve().is_relative_to(root)]
        if inside:
            raise CollectError(f"{out}: --overwrite would delete inputs inside it ({', '.join(inside[:3])}); "
                               "choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


# ------------------------------------------------------------------------------------------ small helpers


def _safe_name(path: Path) -> str:
    """A file name that is safe everywhere: word characters and ``-``; never starting with ``-=+@``."""
    suffix = re.sub(r"[^a-z0-9]", "", path.suffix.lower())
    return _safe_stem(path) + (f".{suffix}" if suffix else "")


def _safe_stem(path: Path) -> str:
    stem = re.sub(r"[^\w-]+", "_", path.stem).strip("_")
    return stem.lstrip("-=+@_") or "photo"


def _reason(exc: Exception, path: Path | str) -> str:
    """An error's message without the leading "path: " (the left-out list names the file)."""
    text = str(exc)
    for prefix in (f"{path}: ", f"{Path(path).name}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _iso_utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-4] + "Z"


def _time_text(meta, offset: timedelta | None) -> str:
    if meta.taken is None:
        return ""
    offset = offset if offset is not None else meta.utc_offset
    if offset is None:
        return meta.taken.isoformat()  # the camera's clock; its zone is unknown
    return _iso_utc(to_epoch(meta.taken - offset))


def _clock_text(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"read as UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _default_images(csv: Path) -> Path:
    return csv.parent / "images" if (csv.parent / "images").is_dir() else csv.parent


def _frame_count(info) -> int | None:
    return int(info.duration * info.fps) if info.duration and info.fps else None
