"""Walk videos, read (and, for test material, written) with PyAV: FFmpeg inside its wheels.

A frame's time is the video's start time (the container's creation time, or one given by the
user) plus the frame's presentation time. Frames are kept by distance walked (a new frame once the
walker is ``every_m`` metres from the last kept one and moving) or by time (``every_s``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from geomodel.collect.tracks import Tracks, to_epoch
from geomodel.errors import CollectError
from geomodel.geo import haversine

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".3gp", ".mts", ".m2ts"})
MIN_SPEED = 0.3  # m/s: slower than this is standing still, whatever the GPS jitter says
# Creation-time tags, best first: Apple's carries the zone; the others are UTC by convention.
_TIME_TAGS = ("com.apple.quicktime.creationdate", "creation_time", "date")


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video."""

    path: str
    start: float | None  # creation time, seconds since the epoch (UTC), None when not recorded
    duration: float | None  # seconds
    fps: float | None
    width: int
    height: int


@dataclass
class SampledFrame:
    """One kept frame, upright, with where and when it was taken."""

    offset: float  # seconds from the start of the video
    time: float  # seconds since the epoch, UTC
    latitude: float
    longitude: float
    heading: float | None  # direction of travel on the track, degrees; None when standing
    image: Image.Image


@dataclass
class SampleReport:
    """What happened to a video's frames (for the summary and the messages)."""

    decoded: int = 0  # frames decoded
    kept: int = 0
    uncovered: int = 0  # frames the tracks do not cover (left out)
    uncovered_span: tuple[float, float] | None = None  # first and last uncovered offset, seconds
    error: str | None = None  # decoding stopped early: why


def parse_time(text: str) -> float | None:
    """An ISO 8601 time (``2024-05-01T10:00:00Z``, ``...+05:30``, ``...+0530``) as epoch seconds.

    Times without a zone are read as UTC. None when it does not parse.
    """
    text = str(text).strip()
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)  # +0530 -> +05:30 for fromisoformat
    try:
        return to_epoch(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None


def probe_video(path: str | Path) -> VideoInfo:
    """Read the container's header; CollectError when it is not a video PyAV can open."""
    with _open(path) as container:
        stream = container.streams.video[0]
        meta = {**{k.lower(): v for k, v in stream.metadata.items()},
                **{k.lower(): v for k, v in container.metadata.items()}}
        start = next((t for t in (parse_time(meta[k]) for k in _TIME_TAGS if k in meta) if t is not None), None)
        duration = float(container.duration / 1_000_000) if container.duration else None
        fps = float(stream.average_rate) if stream.average_rate else None
        return VideoInfo(str(path), start, duration, fps, stream.codec_context.width, stream.codec_context.height)


class FramePicker:
    """Decides, frame by frame in time order, which frames of a walk to keep (see `sample_frames`).

    Needs no pixels, so it also answers "how many frames would a 30 fps video of this walk give".
    """

    def __init__(self, tracks: Tracks, *, every_m: float | None = 2.0, every_s: float | None = None,
                 min_speed: float = MIN_SPEED):
        if (every_m is None) == (every_s is None):
            raise ValueError("give exactly one of every_m and every_s")
        self.tracks, self.every_m, self.every_s, self.min_speed = tracks, every_m, every_s, min_speed
        self.last: tuple[float, float, float] | None = None  # (offset, lat, lon) of the last kept frame

    def pick(self, time: float, offset: float) -> tuple[float, float] | None:
        """(lat, lon) when the frame at ``time`` (epoch s; ``offset`` s into the video) is kept, else None.

        Raises `Uncovered` when no track covers the time.
        """
        where = self.tracks.locate(np.array([time]))
        if not where.covered[0]:
            raise Uncovered(time)
        lat, lon = float(where.lat[0]), float(where.lon[0])
        if self.last is not None:
            if self.every_s is not None and offset - self.last[0] < self.every_s:
                return None
            if self.every_m is not None and (haversine(self.last[1], self.last[2], lat, lon) < self.every_m
                                             or self.tracks.speed(np.array([time]))[0] < self.min_speed):
                return None
        self.last = (offset, lat, lon)
        return lat, lon


class Uncovered(Exception):
    """A frame's time lies outside every track."""


def sample_frames(path: str | Path, start: float, tracks: Tracks, *, every_m: float | None = 2.0,
                  every_s: float | None = None, max_side: int | None = None, min_speed: float = MIN_SPEED,
                  report: SampleReport | None = None) -> Iterator[SampledFrame]:
    """Decode a video and yield the frames to keep, placed on ``tracks`` by time.

    Exactly one of ``every_m`` (metres walked: a frame once the position is that far from the
    last kept frame's and the walker is moving at ``min_speed`` or more) and ``every_s``
    (seconds) is used. Frames the tracks do not cover are counted in ``report``, never yielded.
    ``max_side`` shrinks frames larger than that (pixels). A video that cannot be decoded at all
    raises CollectError; one that breaks off part way yields what came before and says why in
    ``report.error``.
    """
    import av

    picker = FramePicker(tracks, every_m=every_m, every_s=every_s, min_speed=min_speed)
    report = report if report is not None else SampleReport()
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first_pts = stream.start_time or 0
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                report.decoded += 1
                offset = float((frame.pts - first_pts) * stream.time_base)
                try:
                    where = picker.pick(start + offset, offset)
                except Uncovered:
                    report.uncovered += 1
                    lo, hi = report.uncovered_span or (offset, offset)
                    report.uncovered_span = (min(lo, offset), max(hi, offset))
                    continue
                if where is None:
                    continue
                heading = float(tracks.heading(np.array([start + offset]))[0])
                report.kept += 1
                yield SampledFrame(offset, start + offset, where[0], where[1],
                                   None if np.isnan(heading) else heading, _upright(frame, max_side))
        except av.error.FFmpegError as exc:
            if report.decoded == 0:
                raise CollectError(f"{path}: no readable frames ({exc.strerror or exc})") from None
            report.error = f"decoding stopped after {report.decoded} frames ({exc.strerror or exc})"
    if report.decoded == 0:
        raise CollectError(f"{path}: no readable frames (the video stream is empty)")


def write_video(path: str | Path, frames: Iterable[Image.Image], *, fps: float, start: datetime | None = None,
                codec: str = "libx264", rotation: int = 0, quality: int = 23) -> Path:
    """Encode frames (all the same even size) as a video with PyAV, as a phone would record it.

    ``start`` becomes the container's creation time (UTC); ``rotation`` (degrees
    counter-clockwise) is stored as the display rotation players apply. ``quality`` is x264's CRF.
    """
    import av

    path = Path(path)
    with av.open(str(path), "w") as out:
        if start is not None:
            start = start.replace(tzinfo=timezone.utc) if start.tzinfo is None else start.astimezone(timezone.utc)
            out.metadata["creation_time"] = start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        stream = None
        for image in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = image.size
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": str(quality), "preset": "veryfast"}
                if rotation:
                    stream.set_display_rotation(rotation)
            for packet in stream.encode(av.VideoFrame.from_image(image.convert("RGB"))):
                out.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return path


# ---------------------------------------------------------------------------------------------


def _open(path: str | Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise CollectError(f"{path}: video file not found")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise CollectError(f"{path}: not a readable video ({exc.strerror or exc})") from None
    if not container.streams.video:
        container.close()
        raise CollectError(f"{path}: has no video stream")
    return container


def _upright(frame, max_side: int | None) -> Image.Image:
    image = frame.to_image()
    if frame.rotation:
        image = image.rotate(frame.rotation, expand=True)  # the display matrix's turn, counter-clockwise
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image
