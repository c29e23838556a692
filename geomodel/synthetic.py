"""A deterministic synthetic campus for the offline demo and for tests.

Real photos cannot be committed, so the demo bundle is made from a toy world a
small CNN can genuinely learn from:

* ``make_campus`` splits a square world (``size`` x ``size`` planar units, read
  as metres when ``size=1000``) into a grid of rectangular regions separated by
  streets. Every region has its own architectural *style* (a wall hue, an accent
  colour, a texture: bricks, window grids, stripes, dots, checker...), a paving
  tint and several box-shaped buildings plus one tall landmark tower.
* ``render_view`` draws a ground-level photo with a vectorised numpy raycaster:
  one ray per image column, the nearest wall wins, wall height shrinks as
  1/distance, textures come from the hit building's region style, the ground is
  floor-cast with the paving of the region under it, and far things fade into
  fog. Walls are lit by a fixed sun, so the heading shows in the shading.
* ``make_dataset`` samples cameras in open space, renders them and writes a
  labels CSV in the project's format (``filename,latitude,longitude,angle,
  Region_ID``) plus ``plan.png``/``plan.json`` for map overlays.

A region's own buildings fill most of what a camera inside it sees, so the
region is learnable; distance and angle to those buildings change with
position, so coordinates are learnable too. Coordinates: latitude = y (north
up), longitude = x (east); headings are degrees clockwise from north. Same
arguments give identical pixels and byte-identical CSVs (numpy + Pillow only).
"""
from __future__ import annotations

import colorsys
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "CampusPlan",
    "make_campus",
    "render_view",
    "plan_image",
    "sample_open_points",
    "make_dataset",
]

_NAMES = (
    "Library quarter", "Science park", "Sports fields", "Arts court", "Medical campus",
    "Engineering yard", "Student village", "Old quad", "Business school", "Lakeside halls",
    "Music row", "Admin hill",
)
_N_PATTERNS = 8  # see _pattern
_EYE = 1.7  # camera height in metres (scaled by size / 1000)
_HORIZON = 0.6  # horizon row as a fraction of image height: the camera tilts up a little
_HEDGE = 3.0  # height of the perimeter hedge; above eye level so nothing beyond shows
_FOG = 260.0  # fog length in metres
_SUN_AZIMUTH = 150.0  # degrees clockwise from north
_SUN = np.array([math.sin(math.radians(_SUN_AZIMUTH)), math.cos(math.radians(_SUN_AZIMUTH))])


@dataclass(frozen=True, eq=False)
class CampusPlan:
    """A generated campus; every array is in planar units with x = longitude, y = latitude."""

    size: float  # side of the square world
    seed: int  # seed that made it
    row_edges: np.ndarray  # (R + 1,) latitude edges of region rows, south to north
    col_edges: np.ndarray  # (R, C + 1) longitude edges per row, +inf padded
    row_first_region: np.ndarray  # (R,) region index of each row's westernmost cell
    buildings: np.ndarray  # (B, 4) x0, y0, x1, y1 (west, south, east, north)
    heights: np.ndarray  # (B,) wall height
    building_region: np.ndarray  # (B,) region index owning each building
    building_tint: np.ndarray  # (B,) brightness factor so neighbours differ a little
    landmark: np.ndarray  # (B,) True for each region's tower
    wall_colour: np.ndarray  # (N, 3) base wall colour in 0..1
    accent_colour: np.ndarray  # (N, 3) texture colour in 0..1
    paving_colour: np.ndarray  # (N, 3) ground colour in 0..1
    pattern: np.ndarray  # (N,) texture id, 0.._N_PATTERNS-1
    period: np.ndarray  # (N,) texture period in planar units
    region_names: list[str]  # readable names, index = region index

    @property
    def n_regions(self) -> int:
        """Number of regions."""
        return len(self.region_names)

    @property
    def scale(self) -> float:
        """Planar units per metre (1.0 for the default 1000-unit campus)."""
        return self.size / 1000.0

    @property
    def bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((south, west), (north, east))`` of the world."""
        return (0.0, 0.0), (float(self.size), float(self.size))

    @property
    def region_centroids(self) -> list[tuple[float, float]]:
        """``(latitude, longitude)`` centre of each region's rectangle."""
        out: list[tuple[float, float]] = [(0.0, 0.0)] * self.n_regions
        for r in range(len(self.row_first_region)):
            lat = 0.5 * float(self.row_edges[r] + self.row_edges[r + 1])
            xs = self.col_edges[r][np.isfinite(self.col_edges[r])]
            for c in range(len(xs) - 1):
                out[int(self.row_first_region[r]) + c] = (lat, 0.5 * float(xs[c] + xs[c + 1]))
        return out

    def region_rectangles(self) -> np.ndarray:
        """(N, 4) ``west, south, east, north`` of each region's rectangle, region index order.

        The rectangles tile the world: neighbours share their edges exactly.
        """
        out = np.zeros((self.n_regions, 4))
        for r in range(len(self.row_first_region)):
            xs = self.col_edges[r][np.isfinite(self.col_edges[r])]
            for c in range(len(xs) - 1):
                out[int(self.row_first_region[r]) + c] = (xs[c], self.row_edges[r], xs[c + 1], self.row_edges[r + 1])
        return out

    def regions_of(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Vectorised ``region_of``; points outside the world snap to the nearest region."""
        lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
        n_rows = len(self.row_first_region)
        row = np.clip(np.searchsorted(self.row_edges, lat, side="right") - 1, 0, n_rows - 1)
        inner = self.col_edges[row][..., 1:-1]  # (..., C - 1); +inf past a row's last cell
        col = np.sum(lon[..., None] >= inner, axis=-1)
        n_cols = np.sum(np.isfinite(self.col_edges[row]), axis=-1) - 1
        return self.row_first_region[row] + np.minimum(col, n_cols - 1)

    def region_of(self, lat: float, lon: float) -> int:
        """0-based index of the region containing ``(lat, lon)``."""
        return int(self.regions_of(np.array(lat), np.array(lon)))

    def in_building(self, lat: np.ndarray, lon: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """True where a point lies inside a building grown by ``margin`` on every side."""
        lat, lon = np.asarray(lat, dtype=float)[..., None], np.asarray(lon, dtype=float)[..., None]
        b = self.buildings
        return np.any((lon >= b[:, 0] - margin) & (lon <= b[:, 2] + margin)
                      & (lat >= b[:, 1] - margin) & (lat <= b[:, 3] + margin), axis=-1)


def _split(total: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Edges of ``n`` jittered intervals covering ``[0, total]``."""
    w = 1.0 + rng.uniform(-0.2, 0.2, n)
    return np.concatenate([[0.0], np.cumsum(w / w.sum() * total)])


_Building = tuple[float, float, float, float, float, bool]  # x0, y0, x1, y1, height, landmark


def _region_buildings(x0: float, y0: float, x1: float, y1: float, s: float,
                      rng: np.random.Generator) -> list[_Building]:
    """Buildings for one region rectangle: a block grid, most blocks built, one tower."""
    street, lane, block = 10.0 * s, 5.0 * s, 60.0 * s
    x0, y0, x1, y1 = x0 + street, y0 + street, x1 - street, y1 - street
    nx, ny = max(1, round((x1 - x0) / block)), max(1, round((y1 - y0) / block))
    bw, bh = (x1 - x0) / nx, (y1 - y0) / ny
    tower = int(rng.integers(nx * ny))
    out = []
    for k in range(nx * ny):
        ix, iy = k % nx, k // nx
        iw, ih = bw - 2 * lane, bh - 2 * lane  # usable block interior
        ox, oy = x0 + ix * bw + lane, y0 + iy * bh + lane
        if k == tower:
            side = min(0.5 * min(iw, ih), 28.0 * s)
            cx = ox + iw / 2 + rng.uniform(-0.2, 0.2) * (iw - side)
            cy = oy + ih / 2 + rng.uniform(-0.2, 0.2) * (ih - side)
            h = rng.uniform(45.0, 65.0) * s
            out.append((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, h, True))
        elif rng.random() < 0.85 or (not out and k == nx * ny - 1):
            w, d = rng.uniform(0.55, 0.95) * iw, rng.uniform(0.55, 0.95) * ih
            bx, by = ox + rng.uniform(0, iw - w), oy + rng.uniform(0, ih - d)
            out.append((bx, by, bx + w, by + d, rng.uniform(10.0, 28.0) * s, False))
    return out


def make_campus(n_regions: int = 6, seed: int = 0, size: float = 1000.0) -> CampusPlan:
    """Generate a campus of ``n_regions`` rectangular regions in a ``size`` x ``size`` world.

    Regions are numbered row by row from the north-west corner, like reading a map.
    """
    if n_regions < 1:
        raise ValueError(f"n_regions must be >= 1, got {n_regions}")
    if size <= 0:
        raise ValueError(f"size must be > 0, got {size}")
    rng = np.random.default_rng(seed)
    s = size / 1000.0
    n_rows = max(1, math.isqrt(n_regions))
    per_row = [n_regions // n_rows + (1 if r < n_regions % n_rows else 0) for r in range(n_rows)]
    row_edges = _split(size, n_rows, rng)
    col_edges = np.full((n_rows, max(per_row) + 1), np.inf)
    first = np.zeros(n_rows, dtype=np.int64)
    next_id = 0
    for r in reversed(range(n_rows)):  # northernmost row gets the first ids
        first[r] = next_id
        col_edges[r, : per_row[r] + 1] = _split(size, per_row[r], rng)
        next_id += per_row[r]

    rows: list[tuple[float, ...]] = []
    owner: list[int] = []
    for r in range(n_rows):
        for c in range(per_row[r]):
            for b in _region_buildings(col_edges[r, c], row_edges[r], col_edges[r, c + 1],
                                       row_edges[r + 1], s, rng):
                rows.append(b)
                owner.append(int(first[r]) + c)
    table = np.array(rows, dtype=float)

    hues = (np.arange(n_regions) / n_regions + rng.uniform()) % 1.0
    rng.shuffle(hues)
    patterns = rng.permutation(max(n_regions, _N_PATTERNS))[:n_regions] % _N_PATTERNS
    wall = np.array([colorsys.hsv_to_rgb(h, 0.6, 0.8) for h in hues])
    dark = rng.random(n_regions) < 0.5  # accent darker or lighter than the wall
    accent = np.where(dark[:, None], wall * 0.35, 0.55 + 0.45 * wall)
    paving = 0.55 * np.array([0.55, 0.55, 0.52]) + 0.45 * wall * 0.8
    names = [_NAMES[i] if i < len(_NAMES) else f"District {i + 1}" for i in range(n_regions)]
    return CampusPlan(
        size=float(size), seed=seed, row_edges=row_edges, col_edges=col_edges,
        row_first_region=first, buildings=table[:, :4], heights=table[:, 4],
        building_region=np.array(owner, dtype=np.int64),
        building_tint=rng.uniform(0.85, 1.1, len(table)), landmark=table[:, 5].astype(bool),
        wall_colour=wall, accent_colour=accent, paving_colour=paving,
        pattern=patterns.astype(np.int64), period=rng.uniform(2.5, 5.0, n_regions) * s,
        region_names=names,
    )


def _pattern(kind: int, u: np.ndarray, z: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Texture mask in {0, 1} for wall coordinates ``u`` (along the wall) and ``z`` (height)."""
    a, b = u / p, z / p
    if kind == 0:  # horizontal bands
        return np.floor(b) % 2
    if kind == 1:  # bricks: mortar lines with every other course shifted
        course = np.floor(2 * b)
        return ((2 * b % 1 < 0.2) | ((a + 0.5 * (course % 2)) % 1 < 0.1)).astype(float)
    if kind == 2:  # window grid
        return ((a % 1 > 0.25) & (a % 1 < 0.75) & (b % 1 > 0.3) & (b % 1 < 0.8)).astype(float)
    if kind == 3:  # dots
        return (((a % 1 - 0.5) ** 2 + (b % 1 - 0.5) ** 2) < 0.09).astype(float)
    if kind == 4:  # checker
        return (np.floor(a) + np.floor(b)) % 2
    if kind == 5:  # vertical stripes
        return np.floor(a) % 2
    if kind == 6:  # diagonal stripes
        return np.floor(a + b) % 2
    return ((np.abs(a % 1 - 0.5) + np.abs(b % 1 - 0.5)) < 0.3).astype(float)  # diamonds


def _cast(plan: CampusPlan, x: float, y: float, dx: np.ndarray,
          dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit per ray: (t, building index or -1 for the hedge, along-wall u, normal)."""
    eps = 1e-12
    dx = np.where(np.abs(dx) < eps, eps, dx)
    dy = np.where(np.abs(dy) < eps, eps, dy)
    b = plan.buildings
    tx0, tx1 = (b[:, 0] - x) / dx[:, None], (b[:, 2] - x) / dx[:, None]  # (W, B)
    ty0, ty1 = (b[:, 1] - y) / dy[:, None], (b[:, 3] - y) / dy[:, None]
    tminx, tminy = np.minimum(tx0, tx1), np.minimum(ty0, ty1)
    tnear = np.maximum(tminx, tminy)
    tfar = np.minimum(np.maximum(tx0, tx1), np.maximum(ty0, ty1))
    tnear = np.where((tnear <= tfar) & (tnear > 0), tnear, np.inf)
    idx = np.argmin(tnear, axis=1)
    cols = np.arange(len(dx))
    t = tnear[cols, idx]
    xface = tminx[cols, idx] > tminy[cols, idx]
    # The hedge: where the ray leaves the world square.
    ex = np.maximum(-x / dx, (plan.size - x) / dx)
    ey = np.maximum(-y / dy, (plan.size - y) / dy)
    hedge = ~(t < np.minimum(ex, ey))
    t = np.where(hedge, np.minimum(ex, ey), t)
    xface = np.where(hedge, ex < ey, xface)
    idx = np.where(hedge, -1, idx)
    u = np.where(xface, y + t * dy, x + t * dx)
    normal = np.stack([np.where(xface, -np.sign(dx), 0.0), np.where(xface, 0.0, -np.sign(dy))], 1)
    return t, idx, u, normal


def _render_array(plan: CampusPlan, lat: float, lon: float, heading_deg: float, h: int,
                  w: int, fov_deg: float) -> np.ndarray:
    """Render an (h, w, 3) float image in 0..1 at the given resolution."""
    s = plan.scale
    eye = _EYE * s
    f = (w / 2) / math.tan(math.radians(fov_deg) / 2)  # focal length in pixels
    th = math.radians(heading_deg)
    fwd, right = np.array([math.sin(th), math.cos(th)]), np.array([math.cos(th), -math.sin(th)])
    cx = (np.arange(w) + 0.5 - w / 2) / f  # (W,)
    dx, dy = fwd[0] + cx * right[0], fwd[1] + cx * right[1]  # unnormalised: t is depth
    t, idx, u, normal = _cast(plan, lon, lat, dx, dy)
    hedge = idx < 0
    reg = np.where(hedge, 0, plan.building_region[idx])
    wall_h = np.where(hedge, _HEDGE * s, plan.heights[idx])
    yc = (np.arange(h) + 0.5 - _HORIZON * h)[:, None] / f  # (H, 1) downward slope of each row
    z = eye - yc * t[None, :]  # (H, W) height where each pixel's ray meets the wall plane
    img = np.empty((h, w, 3))

    # Sky: gradient from the horizon up, warmer towards the sun's azimuth.
    az = np.degrees(np.arctan2(dx, dy))
    glow = np.exp(-((((az - _SUN_AZIMUTH) + 180) % 360 - 180) / 30.0) ** 2)[None, :, None]
    up = np.clip(-yc / (_HORIZON * h / f), 0, 1)[:, :, None]
    sky = (1 - up) * np.array([0.80, 0.87, 0.95]) + up * np.array([0.33, 0.52, 0.85])
    img[:] = sky + 0.18 * glow * (1 - up) * np.array([1.0, 0.8, 0.4])

    # Ground: floor-cast paving of the region under each pixel, with a tile grid.
    floor = z < 0
    fy, fx = np.nonzero(floor)
    depth = eye / yc[fy, 0]
    px, py = lon + depth * dx[fx], lat + depth * dy[fx]
    ground = plan.paving_colour[plan.regions_of(py, px)]
    tile = 4.0 * s
    lines = (px % tile < 0.2 * s) | (py % tile < 0.2 * s)
    ground = ground * np.where(lines, 0.82, 1.0)[:, None]
    dist = depth * np.hypot(dx[fx], dy[fx])
    img[fy, fx] = _fog(ground, dist, s)

    # Walls: region texture, per-building tint, sun shading by face orientation.
    wall = (z >= 0) & (z <= wall_h[None, :])
    wy, wx = np.nonzero(wall)
    uu, zz, rr = u[wx], z[wy, wx], reg[wx]
    mask = np.zeros(len(wx))
    for k in np.unique(plan.pattern[rr]):
        sel = plan.pattern[rr] == k
        mask[sel] = _pattern(int(k), uu[sel], zz[sel], plan.period[rr[sel]])
    base, acc = plan.wall_colour[rr], plan.accent_colour[rr]
    bid = idx[wx]
    mark = (bid >= 0) & plan.landmark[np.maximum(bid, 0)]
    base, acc = np.where(mark[:, None], acc, base), np.where(mark[:, None], base, acc)
    col = base * (1 - mask[:, None]) + acc * mask[:, None]
    tint = np.where(bid >= 0, plan.building_tint[np.maximum(bid, 0)], 1.0)
    shade = 0.55 + 0.45 * np.clip(normal[wx] @ _SUN, 0, 1)
    col = col * (tint * shade)[:, None]
    leaves = 0.5 + 0.5 * (np.sin(uu * 2.3 / s) * np.sin(zz * 3.1 / s) > 0)
    green = np.array([0.2, 0.42, 0.18]) * (0.8 + 0.3 * leaves[:, None])
    col = np.where(hedge[wx, None], green, col)
    img[wy, wx] = _fog(col, t[wx] * np.hypot(dx[wx], dy[wx]), s)
    return img


def _fog(colour: np.ndarray, dist: np.ndarray, s: float) -> np.ndarray:
    """Blend ``colour`` (K, 3) toward the haze colour with distance (K,)."""
    a = 0.7 * (1 - np.exp(-dist / (_FOG * s)))[:, None]
    return colour * (1 - a) + np.array([0.78, 0.82, 0.88]) * a


def render_view(plan: CampusPlan, lat: float, lon: float, heading_deg: float, size: int = 64,
                *, fov_deg: float = 70.0, supersample: int = 2) -> Image.Image:
    """Ground-level RGB view from ``(lat, lon)`` looking ``heading_deg`` clockwise from north.

    Rendered at ``size * supersample`` pixels and box-filtered down, to tame texture aliasing.
    """
    if size < 1 or supersample < 1:
        raise ValueError(f"size and supersample must be >= 1, got {size}, {supersample}")
    n = size * supersample
    img = _render_array(plan, float(lat), float(lon), float(heading_deg), n, n, fov_deg)
    img = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")


def plan_image(plan: CampusPlan, px: int = 512) -> Image.Image:
    """Top-down map, north up; its pixel extent is exactly ``plan.bounds``."""
    centres = (np.arange(px) + 0.5) / px * plan.size
    lon, lat = np.meshgrid(centres, centres[::-1])  # row 0 is the north edge
    reg = plan.regions_of(lat, lon)
    img = 0.5 * plan.paving_colour[reg] + 0.5
    edge = np.zeros_like(reg, dtype=bool)
    edge[1:, :] |= reg[1:, :] != reg[:-1, :]
    edge[:, 1:] |= reg[:, 1:] != reg[:, :-1]
    img[edge] = 0.35
    k = px / plan.size  # pixels per unit; a pixel is painted when its centre is inside
    for (x0, y0, x1, y1), r, mark in zip(plan.buildings, plan.building_region, plan.landmark):
        top, bottom = (plan.size - y1) * k, (plan.size - y0) * k  # rows grow southward
        cols = slice(math.ceil(x0 * k - 0.5), math.floor(x1 * k - 0.5) + 1)
        rows = slice(math.ceil(top - 0.5), math.floor(bottom - 0.5) + 1)
        img[rows, cols] = plan.accent_colour[r] if mark else plan.wall_colour[r] * 0.85
    out = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(out)
    for i, (clat, clon) in enumerate(plan.region_centroids):
        x, y = clon / plan.size * px, (1 - clat / plan.size) * px
        draw.text((x, y), str(i + 1), fill=(0, 0, 0), anchor="mm")
    return out


def sample_open_points(plan: CampusPlan, n: int, rng: np.random.Generator,
                       clearance: float | None = None) -> np.ndarray:
    """``(n, 2)`` uniform ``(lat, lon)`` points in open space, ``clearance`` from any wall."""
    c = 3.0 * plan.scale if clearance is None else clearance
    out = np.empty((0, 2))
    while len(out) < n:
        pts = rng.uniform(c, plan.size - c, (2 * n + 16, 2))
        out = np.concatenate([out, pts[~plan.in_building(pts[:, 0], pts[:, 1], margin=c)]])
    return out[:n]


def make_dataset(plan: CampusPlan, out_dir: str | Path, n_images: int, image_size: int = 64,
                 seed: int = 0, filename_prefix: str = "syn", *,
                 image_format: str = "png") -> Path:
    """Render ``n_images`` random views into ``out_dir``; returns the ``labels.csv`` path.

    Writes ``images/<prefix>_<i>.<ext>``, ``labels.csv``
    (``filename,latitude,longitude,angle,Region_ID``, Region_ID 1-based), ``plan.png`` and
    ``plan.json``. Same arguments give identical files.
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Round first so the CSV describes exactly what was rendered.
    points = np.round(sample_open_points(plan, n_images, rng), 4)
    headings = np.round(rng.uniform(0.0, 360.0, n_images), 2) % 360.0
    regions = plan.regions_of(points[:, 0], points[:, 1]) + 1
    csv_path = out / "labels.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["filename", "latitude", "longitude", "angle", "Region_ID"])
        for i, ((lat, lon), ang, reg) in enumerate(zip(points, headings, regions)):
            name = f"{filename_prefix}_{i:05d}.{image_format}"
            view = render_view(plan, lat, lon, ang, image_size)
            view.save(out / "images" / name, **({"quality": 95} if image_format == "jpg" else {}))
            writer.writerow([name, f"{lat:.4f}", f"{lon:.4f}", f"{ang:.2f}", int(reg)])
    plan_image(plan).save(out / "plan.png")
    meta = {
        "bounds": [list(plan.bounds[0]), list(plan.bounds[1])],
        "region_names": plan.region_names,
        "region_centroids": [list(c) for c in plan.region_centroids],
        "frame": "planar",
    }
    (out / "plan.json").write_text(json.dumps(meta, indent=2) + "\n")
    return csv_path
