"""GPS tracks (GPX, read and written with gpxpy) and placing times on them.

A GPS app records where the walker was, second by second, in UTC. A photo without GPS, or a
frame of a walk video, is placed at its time by linear interpolation between the two track
points around it. No position is invented across a gap in the recording (`max_gap`), between
two segments of a track, or outside the recorded time.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from geomodel.errors import CollectError
from geomodel.geo import bearing, haversine

MAX_GAP_S = 60.0  # no interpolation between track points further apart in time than this


@dataclass(frozen=True)
class Segment:
    """One unbroken stretch of a recording; times strictly increase."""

    times: np.ndarray  # (N,) seconds since the epoch, UTC
    lat: np.ndarray  # (N,) degrees
    lon: np.ndarray  # (N,) degrees
    walked: np.ndarray  # (N,) metres along the track from the segment's first point


@dataclass(frozen=True)
class Track:
    """A GPS track read from one file."""

    source: str  # the file, for messages
    segments: tuple[Segment, ...]

    @property
    def start(self) -> float:
        return min(float(s.times[0]) for s in self.segments)

    @property
    def end(self) -> float:
        return max(float(s.times[-1]) for s in self.segments)

    @property
    def n_points(self) -> int:
        return sum(len(s.times) for s in self.segments)


@dataclass(frozen=True)
class Located:
    """Positions of query times on the tracks; NaN where `covered` is False."""

    lat: np.ndarray
    lon: np.ndarray
    walked: np.ndarray  # metres along the covering segment (comparable only within one segment)
    segment: np.ndarray  # index of the covering segment among `Tracks.segments`, -1 where uncovered

    @property
    def covered(self) -> np.ndarray:
        return self.segment >= 0


def make_segment(times: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> Segment:
    """A segment from time-ordered points: sorts them and drops repeated times (first kept)."""
    times, lat, lon = (np.asarray(a, dtype=np.float64) for a in (times, lat, lon))
    order = np.argsort(times, kind="stable")
    times, lat, lon = times[order], lat[order], lon[order]
    keep = np.concatenate([[True], np.diff(times) > 0])
    times, lat, lon = times[keep], lat[keep], lon[keep]
    steps = haversine(lat[:-1], lon[:-1], lat[1:], lon[1:])
    return Segment(times, lat, lon, np.concatenate([[0.0], np.cumsum(steps)]))


def read_gpx(path: str | Path) -> Track:
    """Read the timed track points of a GPX file; raise CollectError saying what is wrong.

    Times without a zone are read as UTC, which is what GPX prescribes. Points without a time
    are skipped; a file whose points have no times at all is an error (it cannot place photos).
    """
    import gpxpy
    import gpxpy.gpx

    path = Path(path)
    if not path.is_file():
        raise CollectError(f"{path}: GPX file not found")
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            gpx = gpxpy.parse(fh)
    except (gpxpy.gpx.GPXException, ValueError) as exc:
        raise CollectError(f"{path}: not a readable GPX file ({str(exc).strip() or type(exc).__name__})") from None
    segments, untimed = [], 0
    for trk in gpx.tracks:
        for seg in trk.segments:
            pts = [p for p in seg.points if p.time is not None]
            untimed += len(seg.points) - len(pts)
            if pts:
                segments.append(make_segment(np.array([to_epoch(p.time) for p in pts]),
                                             np.array([p.latitude for p in pts]), np.array([p.longitude for p in pts])))
    if not segments:
        if untimed:
            raise CollectError(f"{path}: its {untimed} track points have no timestamps, so nothing can be placed "
                               "on it by time (export the track with times)")
        extra = f" ({len(gpx.routes)} route(s), {len(gpx.waypoints)} waypoint(s))" if gpx.routes or gpx.waypoints else ""
        raise CollectError(f"{path}: no track points{extra}; a recorded GPS track (<trk><trkseg><trkpt> with <time>) "
                           "is needed")
    return Track(str(path), tuple(segments))


def write_gpx(path: str | Path, segments: Sequence[tuple[Sequence[datetime], Sequence[float], Sequence[float]]], *,
              name: str | None = None) -> Path:
    """Write one track (what a GPS app records) of ``(times, lat, lon)`` segments with gpxpy; times made UTC."""
    import gpxpy.gpx

    gpx = gpxpy.gpx.GPX()
    track = gpxpy.gpx.GPXTrack(name=name)
    for times, lat, lon in segments:
        segment = gpxpy.gpx.GPXTrackSegment()
        for t, la, lo in zip(times, lat, lon):
            t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
            segment.points.append(gpxpy.gpx.GPXTrackPoint(float(la), float(lo), time=t))
        track.segments.append(segment)
    gpx.tracks.append(track)
    path = Path(path)
    path.write_text(gpx.to_xml(), encoding="utf-8")
    return path


class Tracks:
    """Several tracks searched together; the first segment covering a time places it."""

    def __init__(self, tracks: Sequence[Track], *, max_gap: float = MAX_GAP_S):
        self.tracks = list(tracks)
        self.segments = [s for t in self.tracks for s in t.segments]
        self.max_gap = float(max_gap)

    def __bool__(self) -> bool:
        return bool(self.segments)

    def span(self) -> tuple[float, float] | None:
        """(first, last) recorded time over all tracks, seconds since the epoch (UTC)."""
        if not self.tracks:
            return None
        return min(t.start for t in self.tracks), max(t.end for t in self.tracks)

    def locate(self, times: np.ndarray) -> Located:
        """Positions at ``times`` (seconds since the epoch, UTC), interpolated along the track."""
        times = np.asarray(times, dtype=np.float64)
        lat, lon, walked = (np.full(times.shape, np.nan) for _ in range(3))
        which = np.full(times.shape, -1, dtype=np.int64)
        for k, seg in enumerate(self.segments):
            todo = (which < 0) & (times >= seg.times[0]) & (times <= seg.times[-1])
            if not todo.any():
                continue
            t = times[todo]
            j = np.clip(np.searchsorted(seg.times, t, side="right"), 1, max(len(seg.times) - 1, 1))
            if len(seg.times) == 1:
                ok = np.ones(len(t), dtype=bool)  # t equals the single point's time
            else:
                exact = (t == seg.times[j - 1]) | (t == seg.times[j])
                ok = exact | (seg.times[j] - seg.times[j - 1] <= self.max_gap)
            idx = np.flatnonzero(todo)[ok]
            t = t[ok]
            lat[idx] = np.interp(t, seg.times, seg.lat)
            lon[idx] = np.interp(t, seg.times, seg.lon)
            walked[idx] = np.interp(t, seg.times, seg.walked)
            which[idx] = k
        return Located(lat, lon, walked, which)

    def heading(self, times: np.ndarray, *, window: float = 3.0, min_move: float = 1.0) -> np.ndarray:
        """Direction of travel at ``times`` (degrees clockwise from north), from the positions
        ``window`` seconds before and after; NaN where the walker moved less than ``min_move``
        metres in that time (standing still has no direction) or the track does not cover it."""
        times = np.asarray(times, dtype=np.float64)
        before, after = self.locate(times - window), self.locate(times + window)
        here = self.locate(times)
        # at the ends of a segment, use the point itself instead of a time it does not cover
        same = (before.segment == here.segment) & before.covered
        b_lat, b_lon = np.where(same, before.lat, here.lat), np.where(same, before.lon, here.lon)
        same = (after.segment == here.segment) & after.covered
        a_lat, a_lon = np.where(same, after.lat, here.lat), np.where(same, after.lon, here.lon)
        moved = haversine(b_lat, b_lon, a_lat, a_lon)
        out = bearing(b_lat, b_lon, a_lat, a_lon)
        return np.where(here.covered & (moved >= min_move), out, np.nan)

    def speed(self, times: np.ndarray, *, window: float = 3.0) -> np.ndarray:
        """Walking speed (m/s) over ``times ± window`` seconds, along the track; NaN where uncovered."""
        times = np.asarray(times, dtype=np.float64)
        before, after, here = self.locate(times - window), self.locate(times + window), self.locate(times)
        b = np.where((before.segment == here.segment) & before.covered, before.walked, here.walked)
        a = np.where((after.segment == here.segment) & after.covered, after.walked, here.walked)
        return np.where(here.covered, (a - b) / (2 * window), np.nan)

    def describe_span(self) -> str:
        """The tracks' time range as readable UTC text."""
        span = self.span()
        return "no tracks" if span is None else f"{utc_text(span[0])} to {utc_text(span[1])} UTC"


def read_tracks(paths: Sequence[str | Path], *, max_gap: float = MAX_GAP_S) -> tuple[Tracks, list[str]]:
    """Read every GPX file; a bad one is reported (its problem in the returned list), the others used."""
    tracks, problems = [], []
    for p in paths:
        try:
            tracks.append(read_gpx(p))
        except CollectError as exc:
            problems.append(str(exc))
    return Tracks(tracks, max_gap=max_gap), problems


def utc_text(seconds: float) -> str:
    """Seconds since the epoch as ``2024-05-01 10:00:03`` (UTC)."""
    return datetime.fromtimestamp(float(seconds), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def to_epoch(when: datetime) -> float:
    """A datetime as seconds since the epoch; naive datetimes are taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()
