"""Synthetic walks through `geomodel.synthetic`'s campus, with everything a phone would record.

A walker wanders the open space of the campus (or of one region) at walking speed, turning
gently and around buildings, pausing now and then. From the walk come: the GPS track a phone
app would record (GPX, with realistic slowly wandering GPS error), the video the walker films
looking ahead (PyAV), and photos taken on the way with GPS and time in their EXIF (Pillow). The
campus is placed on the globe by `geomodel.geo.planar_to_wgs84` (1 unit = 1 metre around
``origin``), and its regions are written as the project's ``regions.geojson``.

Test material and benchmarks use it; `python -m demo.walk` writes a sample for the README.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from geomodel.collect.exif import write_photo_meta
from geomodel.collect.tracks import write_gpx
from geomodel.collect.video import write_video
from geomodel.geo import DEFAULT_ORIGIN, planar_to_wgs84
from geomodel.synthetic import CampusPlan, render_view, sample_open_points

WALK_SPEED = 1.4  # m/s, an unhurried walk
START = datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)


@dataclass
class Walk:
    """A walk in the campus's planar frame, sampled every ``dt`` seconds."""

    t: np.ndarray  # (N,) seconds from the start
    y: np.ndarray  # (N,) latitude-like planar coordinate
    x: np.ndarray  # (N,) longitude-like planar coordinate
    heading: np.ndarray  # (N,) direction the walker faces, degrees clockwise from north

    @property
    def duration(self) -> float:
        return float(self.t[-1])

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(y, x, heading) at ``times`` (seconds from the start), interpolated."""
        h = np.unwrap(np.radians(self.heading))
        return (np.interp(times, self.t, self.y), np.interp(times, self.t, self.x),
                np.degrees(np.interp(times, self.t, h)) % 360.0)


def simulate_walk(plan: CampusPlan, duration: float, rng: np.random.Generator, *, region: int | None = None,
                  speed: float = WALK_SPEED, dt: float = 0.2, pause_every: float = 60.0,
                  pause_length: float = 6.0) -> Walk:
    """Wander ``duration`` seconds through open space, inside region ``region`` (0-based) if given.

    The walker keeps ``3 m`` from walls, turns by a few degrees a second and turns further at
    walls and region edges; on average every ``pause_every`` seconds they stop for ``pause_length``.
    """
    s = plan.scale
    margin = 3.0 * s

    def free(y: float, x: float) -> bool:
        if not (margin <= y <= plan.size - margin and margin <= x <= plan.size - margin):
            return False
        if region is not None and plan.region_of(y, x) != region:
            return False
        return not bool(plan.in_building(np.array(y), np.array(x), margin=margin))

    y, x = _start_point(plan, rng, region, margin)
    heading = rng.uniform(0, 360)
    n = int(math.ceil(duration / dt)) + 1
    ys, xs, hs = np.empty(n), np.empty(n), np.empty(n)
    paused_until = -1.0
    step = speed * dt * s
    for i in range(n):
        ys[i], xs[i], hs[i] = y, x, heading
        t = i * dt
        if t < paused_until:
            continue
        if pause_every and rng.random() < dt / pause_every:
            paused_until = t + pause_length
            continue
        heading += rng.normal(0.0, 6.0 * math.sqrt(dt))
        for turn in _turns(rng):
            h = math.radians(heading + turn)
            ny, nx = y + step * math.cos(h), x + step * math.sin(h)
            if free(ny, nx):
                heading, y, x = heading + turn, ny, nx
                break
    return Walk(np.arange(n) * dt, ys, xs, hs % 360.0)


def gps_error(n: int, dt: float, rng: np.random.Generator, *, sigma: float = 3.0,
              tau: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """(north, east) GPS error in metres: a slowly wandering offset (AR(1), std ``sigma``,
    correlation time ``tau`` seconds), as a phone's GPS has under open sky."""
    a = math.exp(-dt / tau)
    out = np.empty((n, 2))
    out[0] = rng.normal(0, sigma, 2)
    shocks = rng.normal(0, sigma * math.sqrt(1 - a * a), (n, 2))
    for i in range(1, n):
        out[i] = a * out[i - 1] + shocks[i]
    return out[:, 0], out[:, 1]


def walk_track(walk: Walk, rng: np.random.Generator, *, start: datetime = START,
               origin: tuple[float, float] = DEFAULT_ORIGIN, every: float = 1.0, gps_sigma: float = 3.0,
               scale: float = 1.0) -> tuple[list[datetime], np.ndarray, np.ndarray]:
    """What a GPS app records of ``walk``: (UTC times, lat, lon) every ``every`` seconds, with GPS
    error of ``gps_sigma`` metres; ``scale`` is the campus's planar units per metre. For `write_gpx`."""
    times = np.arange(0.0, walk.duration + 1e-9, every)
    y, x, _ = walk.at(times)
    dn, de = gps_error(len(times), every, rng, sigma=gps_sigma)
    lat, lon = planar_to_wgs84(y + dn * scale, x + de * scale, origin=origin, metres_per_unit=1.0 / scale)
    return [start + timedelta(seconds=float(t)) for t in times], lat, lon


def write_walk_video(plan: CampusPlan, walk: Walk, path: str | Path, *, fps: float = 5.0, size: int = 64,
                     start: datetime = START, sway: float = 4.0, rng: np.random.Generator | None = None,
                     progress: bool = False) -> Path:
    """Film ``walk`` looking ahead (heading ± a little ``sway``), ``size`` px square, at ``fps``."""
    rng = rng if rng is not None else np.random.default_rng(0)
    times = np.arange(0.0, walk.duration + 1e-9, 1.0 / fps)
    y, x, h = walk.at(times)
    h = h + sway * np.sin(times * 1.7 + rng.uniform(0, 6.3))

    def frames():
        it = range(len(times))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"rendering {Path(path).name}", unit="frame")
        for i in it:
            yield render_view(plan, y[i], x[i], h[i], size)

    return write_video(path, frames(), fps=fps, start=start)


def write_photos(plan: CampusPlan, out_dir: str | Path, points: np.ndarray, headings: Sequence[float], *,
                 times: Sequence[datetime] | None = None, origin: tuple[float, float] = DEFAULT_ORIGIN,
                 size: int = 64, gps: bool = True, prefix: str = "IMG", camera_offset: timedelta = timedelta(0),
                 zone_tag: bool = True) -> list[Path]:
    """Render photos at planar ``points`` (y, x) as JPEGs carrying what a phone writes in EXIF.

    ``gps=False`` leaves the position out (a camera without GPS), keeping the time so a track can
    place them; ``camera_offset`` is how far the camera clock runs ahead of UTC (its time zone),
    written as OffsetTimeOriginal when ``zone_tag`` (older cameras do not write it).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lat, lon = planar_to_wgs84(points[:, 0], points[:, 1], origin=origin, metres_per_unit=1.0 / plan.scale)
    paths = []
    for i, ((y, x), heading) in enumerate(zip(points, headings)):
        taken = (times[i] + camera_offset).replace(tzinfo=None) if times is not None else None
        image = render_view(plan, y, x, heading, size)
        paths.append(write_photo_meta(image, out / f"{prefix}_{i:04d}.jpg", quality=92,
                                      latitude=float(lat[i]) if gps else None,
                                      longitude=float(lon[i]) if gps else None,
                                      angle=float(heading) if gps else None, taken=taken,
                                      utc_offset=camera_offset if zone_tag and taken is not None else None))
    return paths


def random_photos(plan: CampusPlan, n: int, rng: np.random.Generator,
                  region: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` photo positions (y, x) in open space, in ``region`` if given, with random headings:
    what visitors photograph."""
    points = np.empty((0, 2))
    while len(points) < n:
        found = sample_open_points(plan, 4 * n + 8, rng)
        if region is not None:
            found = found[plan.regions_of(found[:, 0], found[:, 1]) == region]
        points = np.concatenate([points, found])
    return points[:n], rng.uniform(0.0, 360.0, n)


@dataclass
class Sample:
    """Where `make_sample` put things."""

    photos: Path  # geotagged photos (and a few without GPS, placed by the track)
    videos: Path  # one walk video per region
    gpx: Path  # the GPS app's track of the whole session, one segment per walk
    test: Path  # geotagged photos from other places, for testing
    regions: Path  # the campus's regions as regions.geojson
    walk_starts: list[float]  # each region's walk start, seconds since the epoch (UTC)

    @classmethod
    def at(cls, out_dir: str | Path, walk_starts: list[float]) -> "Sample":
        """The layout `make_sample` writes under ``out_dir``."""
        out = Path(out_dir)
        return cls(out / "photos", out / "videos", out / "walk.gpx", out / "test", out / "regions.geojson",
                   list(walk_starts))


def make_sample(out_dir: str | Path, plan: CampusPlan, *, minutes: float = 1.0, photos_per_region: int = 8,
                untagged_per_region: int = 2, test_per_region: int = 10, size: int = 80, fps: float = 4.0,
                seed: int = 0, origin: tuple[float, float] = DEFAULT_ORIGIN,
                camera_zone: timedelta = timedelta(hours=5, minutes=30), progress: bool = False) -> Sample:
    """A walk session on the synthetic campus, as a person with a phone would bring it home.

    For every region: a ``minutes``-long walk filmed at ``fps`` (``videos/walk_<r>.mp4``),
    ``photos_per_region`` geotagged photos taken in the region during the walk (random places and
    headings), ``untagged_per_region`` photos from a camera without GPS taken on the walk (its
    clock in ``camera_zone``, which it writes as OffsetTimeOriginal), and ``test_per_region``
    geotagged photos from elsewhere in the region (``test/``). One GPX file records the session.
    """
    dirs = Sample.at(out_dir, [])
    for d in (dirs.photos, dirs.videos, dirs.test):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    segments = []
    for r in range(plan.n_regions):
        start = START + timedelta(seconds=r * (minutes * 60 + 300))  # 5 minutes to the next region
        walk = simulate_walk(plan, minutes * 60, rng, region=r)
        segments.append(walk_track(walk, rng, start=start, origin=origin, scale=plan.scale))
        write_walk_video(plan, walk, dirs.videos / f"walk_{r + 1}.mp4", fps=fps, size=size, start=start, rng=rng,
                         progress=progress)
        dirs.walk_starts.append(start.timestamp())
        points, headings = random_photos(plan, photos_per_region, rng, region=r)
        when = [start + timedelta(seconds=float(t)) for t in np.sort(rng.uniform(0, walk.duration, len(points)))]
        write_photos(plan, dirs.photos, points, headings, times=when, origin=origin, size=size,
                     prefix=f"IMG_r{r + 1}", camera_offset=camera_zone)
        t = np.sort(rng.uniform(0, walk.duration, untagged_per_region))
        y, x, _ = walk.at(t)
        write_photos(plan, dirs.photos, np.stack([y, x], 1), rng.uniform(0, 360, len(t)),
                     times=[start + timedelta(seconds=float(v)) for v in t], origin=origin, size=size, gps=False,
                     prefix=f"DSC_r{r + 1}", camera_offset=camera_zone)
        points, headings = random_photos(plan, test_per_region, rng, region=r)
        write_photos(plan, dirs.test, points, headings, times=[start] * len(points), origin=origin, size=size,
                     prefix=f"TEST_r{r + 1}")
    write_gpx(dirs.gpx, segments, name="campus walk")
    dirs.regions.write_text(json.dumps(regions_geojson(plan, origin=origin), indent=1) + "\n")
    return dirs


def regions_geojson(plan: CampusPlan, *, origin: tuple[float, float] | None = DEFAULT_ORIGIN) -> dict:
    """The campus's regions as the project's ``regions.geojson``: one rectangle per region, placed
    on the globe around ``origin`` (GeoJSON [lon, lat]), or in the plan's own frame ([x, y]) when
    ``origin`` is None."""
    features = []
    for r in range(len(plan.row_first_region)):
        y0, y1 = float(plan.row_edges[r]), float(plan.row_edges[r + 1])
        xs = plan.col_edges[r][np.isfinite(plan.col_edges[r])]
        for c in range(len(xs) - 1):
            idx = int(plan.row_first_region[r]) + c
            ys, xx = [y0, y0, y1, y1, y0], [float(xs[c]), float(xs[c + 1]), float(xs[c + 1]), float(xs[c]), float(xs[c])]
            if origin is None:
                ring = [[x, y] for x, y in zip(xx, ys)]
            else:
                lat, lon = planar_to_wgs84(np.array(ys), np.array(xx), origin=origin, metres_per_unit=1.0 / plan.scale)
                ring = [[round(float(a), 9), round(float(b), 9)] for a, b in zip(lon, lat)]
            features.append({"type": "Feature", "properties": {"region_id": idx + 1, "name": plan.region_names[idx]},
                             "geometry": {"type": "Polygon", "coordinates": [ring]}})
    features.sort(key=lambda f: f["properties"]["region_id"])
    return {"type": "FeatureCollection", "features": features}


def _start_point(plan: CampusPlan, rng: np.random.Generator, region: int | None, margin: float) -> tuple[float, float]:
    for _ in range(1000):
        y, x = sample_open_points(plan, 1, rng, clearance=margin)[0]
        if region is None or plan.region_of(y, x) == region:
            return float(y), float(x)
    raise ValueError(f"no open space found in region {region}")


def _turns(rng: np.random.Generator) -> list[float]:
    """Headings to try, nearest first: straight on, then ever wider turns either way."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    out = [0.0]
    for k in range(1, 19):
        out += [side * 10.0 * k, -side * 10.0 * k]
    return out
