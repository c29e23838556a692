"""Partitions of photo positions into regions, and polygons that tile them.

Everything here works in a local metric plane (`LocalPlane`: equirectangular metres around
the photos' centre for WGS84, the data's own units for planar frames) with numpy and shapely;
`geomodel.regions` turns the results into `Regions`.

* `far_outliers`: positions far from the rest (a label 30 km off campus), by a robust
  distance-to-median rule, so they never get a region of their own.
* `voronoi_tiling`: labelled positions -> one polygon per label, the Voronoi cells of its
  photos dissolved and clipped to `study_area` (a buffered convex hull).
* `balanced_kmeans`, `kd_split`: K regions with balanced photo counts, as power-diagram cells
  (convex, so contiguous) or as the rectangles of a k-d split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import MultiPoint, MultiPolygon, Polygon

from geomodel.geo import EARTH_RADIUS_M

# A position is a far outlier when its distance to the median position exceeds the median
# distance by this many MADs. On the campus photos legitimate edge photos reach 4 MADs and the
# known bad labels 15-500; a round Gaussian scatter of photos reaches ~8.5 at 5 sigma.
OUTLIER_MADS = 12.0
# The study area is the positions' convex hull grown by this share of its typical width
# (sqrt of its area), so edge photos are not on a region's border.
AREA_MARGIN = 0.05


@dataclass(frozen=True)
class LocalPlane:
    """Maps a frame's (lat, lon) to metric (x, y) and back.

    Planar frames are already metric: x = longitude, y = latitude. WGS84 uses an equirectangular
    projection around (`lat0`, `lon0`), metres; good to well under 1 % across a few tens of km.
    """

    frame: str
    lat0: float = 0.0
    lon0: float = 0.0

    @classmethod
    def around(cls, lat: np.ndarray, lon: np.ndarray, frame: str) -> "LocalPlane":
        if frame == "planar":
            return cls(frame)
        ok = np.isfinite(lat) & np.isfinite(lon)
        return cls(frame, float(np.median(lat[ok])) if ok.any() else 0.0,
                   float(np.median(lon[ok])) if ok.any() else 0.0)

    def to_xy(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """(N, 2) x, y."""
        lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        if self.frame == "planar":
            return np.stack([lon, lat], axis=-1)
        k = math.radians(1.0) * EARTH_RADIUS_M
        dlon = (lon - self.lon0 + 180.0) % 360.0 - 180.0
        return np.stack([dlon * k * math.cos(math.radians(self.lat0)), (lat - self.lat0) * k], axis=-1)

    def xy_to_frame(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) x, y -> (N, 2) frame coordinates in GeoJSON order: longitude, latitude."""
        xy = np.asarray(xy, dtype=np.float64)
        if self.frame == "planar":
            return xy.copy()
        k = math.radians(1.0) * EARTH_RADIUS_M
        lon = self.lon0 + xy[:, 0] / (k * math.cos(math.radians(self.lat0)))
        return np.stack([lon, self.lat0 + xy[:, 1] / k], axis=1)

    def geometry_to_frame(self, geom: shapely.Geometry) -> shapely.Geometry:
        """A geometry built in the plane, in the frame's coordinates (lon/lat for WGS84)."""
        return geom if self.frame == "planar" else shapely.transform(geom, self.xy_to_frame)


def far_outliers(xy: np.ndarray, mads: float = OUTLIER_MADS) -> np.ndarray:
    """(N,) True for positions far from the rest: distance to the median position above
    median + `mads` MADs of those distances. The statistics are taken over the distinct
    positions (a GPS stuck on one spot for half the photos does not make every other photo an
    outlier), the MAD floored at 10 % of the median distance."""
    xy = np.asarray(xy, dtype=np.float64)
    distinct = np.unique(xy, axis=0)
    if len(distinct) < 4:
        return np.zeros(len(xy), dtype=bool)
    centre = np.median(distinct, axis=0)
    d = np.hypot(*(distinct - centre).T)
    m = float(np.median(d))
    scale = max(float(np.median(np.abs(d - m))), 0.1 * m)
    return np.hypot(*(xy - centre).T) > m + mads * scale


def study_area(xy: np.ndarray, margin: float = AREA_MARGIN) -> Polygon:
    """The positions' convex hull grown by `margin` x its typical width (a line or a point of
    positions gets a small disc-like area around it)."""
    hull = MultiPoint(np.asarray(xy, dtype=np.float64)).convex_hull
    span = math.sqrt(hull.area) if hull.area > 0 else max(hull.length, 1.0)
    return hull.buffer(margin * span if hull.area > 0 else max(span, 1.0) * 0.5)


def polygonal(geom: shapely.Geometry) -> Polygon | MultiPolygon:
    """The polygon parts of `geom` (an intersection can add stray lines and points), made valid."""
    if not shapely.is_valid(geom):
        geom = shapely.make_valid(geom)
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, Polygon) and not g.is_empty]
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def voronoi_tiling(xy: np.ndarray, labels: np.ndarray, n_labels: int, area: Polygon) -> list[Polygon | MultiPolygon]:
    """Polygon of each label 0..n_labels-1: the union of its positions' Voronoi cells within `area`.

    Photos at the same position vote for the cell (ties: the lower label). Where labels
    interleave a label gets several pieces (a MultiPolygon); a label without positions gets an
    empty polygon.
    """
    xy, labels = np.asarray(xy, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    unique, inverse = np.unique(xy, axis=0, return_inverse=True)
    votes = np.zeros((len(unique), n_labels), dtype=np.int64)
    np.add.at(votes, (inverse.ravel(), labels), 1)
    owner = votes.argmax(axis=1)
    if len(unique) == 1:
        cells = [area]
    else:
        diagram = shapely.voronoi_polygons(MultiPoint(unique), extend_to=area, ordered=True)
        cells = list(shapely.get_parts(diagram))
    out: list[Polygon | MultiPolygon] = []
    for label in range(n_labels):
        mine = [c for c, o in zip(cells, owner) if o == label]
        out.append(polygonal(shapely.intersection(shapely.union_all(mine), area)) if mine else Polygon())
    return out


def _half_plane(normal: np.ndarray, offset: float, centre: np.ndarray, size: float) -> Polygon:
    """The half-plane normal . p <= offset near `centre`, as a square of side 2 * `size`."""
    length = float(np.linalg.norm(normal))
    n = normal / length
    p0 = centre - n * (n @ centre - offset / length)  # `centre` projected onto the boundary line
    u = np.array([-n[1], n[0]])
    return Polygon([p0 + size * u, p0 - size * u, p0 - size * u - 2 * size * n, p0 + size * u - 2 * size * n])


def power_cells(centres: np.ndarray, weights: np.ndarray, area: Polygon) -> list[Polygon | MultiPolygon]:
    """Cells of the power diagram (|p - c_j|^2 - w_j smallest) clipped to `area`: convex pieces of it."""
    x0, y0, x1, y1 = area.bounds
    middle, size = np.array([x0 + x1, y0 + y1]) / 2, 2 * max(x1 - x0, y1 - y0, 1e-9)  # squares cover the area
    # relative to `middle`: squared coordinates of a campus 200 km from the origin lose no precision
    centres = np.asarray(centres, dtype=np.float64) - middle
    sq = (centres ** 2).sum(axis=1) - weights
    out = []
    for j in range(len(centres)):
        cell = area
        for i in range(len(centres)):
            if i == j:
                continue
            if np.all(centres[i] == centres[j]):  # one site twice: the heavier (or first) cell takes it all
                if (weights[i], -i) > (weights[j], -j):
                    cell = Polygon()
                    break
                continue
            # |p-c_j|^2 - w_j <= |p-c_i|^2 - w_i  <=>  2 p.(c_i - c_j) <= sq_i - sq_j
            half = _half_plane(2 * (centres[i] - centres[j]), sq[i] - sq[j], np.zeros(2), size)
            cell = shapely.intersection(cell, shapely.affinity.translate(half, *middle))
        # on a fine grid, so that neighbours computed separately share their border's vertices exactly
        out.append(polygonal(shapely.set_precision(cell, 1e-9 * size)))
    return out


def _kmeans_pp(xy: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [xy[rng.integers(len(xy))]]
    for _ in range(1, k):
        d = np.min(((xy[:, None, :] - np.asarray(centres)[None]) ** 2).sum(axis=2), axis=1)
        centres.append(xy[rng.choice(len(xy), p=d / d.sum())] if d.sum() > 0 else xy[rng.integers(len(xy))])
    return np.asarray(centres, dtype=np.float64)


class _Moves:
    """Cheapest extra cost of moving one of cluster a's positions into cluster b (K, K), and which
    position, kept up to date row by row as clusters change."""

    def __init__(self, cost: np.ndarray, owner: np.ndarray) -> None:
        self.cost, self.owner = cost, owner
        k = cost.shape[1]
        self.best, self.who = np.full((k, k), np.inf), np.full((k, k), -1)
        for a in range(k):
            self.update(a)

    def update(self, a: int) -> None:
        mine = np.flatnonzero(self.owner == a)
        if not len(mine):
            self.best[a], self.who[a] = np.inf, -1
            return
        extra = self.cost[mine] - self.cost[mine, a][:, None]  # (M_a, K)
        pick = extra.argmin(axis=0)
        self.best[a], self.who[a] = extra[pick, np.arange(extra.shape[1])], mine[pick]
        self.best[a, a] = np.inf


def _shortest(start: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bellman-Ford over K nodes: distances from `start` (K,) through `edges` (K, K), and predecessors."""
    dist, pred = start.copy(), np.full(len(start), -1)
    for _ in range(len(start)):
        via = dist[:, None] + edges  # (from, to)
        frm = via.argmin(axis=0)
        better = via[frm, np.arange(len(start))] < dist - 1e-12 * np.abs(dist)
        if not better.any():
            break
        dist = np.where(better, via[frm, np.arange(len(start))], dist)
        pred = np.where(better, frm, pred)
    return dist, pred


def balanced_assignment(cost: np.ndarray) -> np.ndarray:
    """(N,) cluster of each position minimising the total cost with every cluster holding
    floor(N / K) or ceil(N / K) positions: a min-cost flow solved by successive shortest paths
    (each new position enters through the cheapest chain of moves between clusters)."""
    n, k = cost.shape
    low, high = n // k, -(-n // k)
    penalty = 4 * (float(cost.max()) - float(cost.min())) * n + 1.0  # fill every cluster to `low` first
    owner, counts = np.full(n, -1), np.zeros(k, dtype=np.int64)
    moves = _Moves(cost, owner)
    for p in range(n):
        dist, pred = _shortest(cost[p].astype(np.float64), moves.best)
        tier = np.where(counts < low, 0.0, np.where(counts < high, penalty, np.inf))
        b = int(np.argmin(dist + tier))
        counts[b] += 1
        changed = {b}
        while pred[b] >= 0:  # walk the chain back: a position of pred[b] moves into b
            a = int(pred[b])
            owner[moves.who[a, b]] = b
            changed.add(a)
            b = a
        owner[p] = b
        for a in changed:
            moves.update(a)
    return owner


def _improve(cost: np.ndarray, owner: np.ndarray, max_rounds: int) -> np.ndarray:
    """A balanced assignment made optimal for new costs by cancelling negative cycles of moves.

    Starting from the previous Lloyd step's assignment this takes a few rounds where
    `balanced_assignment` from scratch takes one shortest-path search per position. Node K is
    virtual: a cluster that may shrink (above floor(N / K)) gives through it to one that may
    grow (below ceil(N / K)), so which clusters hold the extra positions can change too.
    """
    n, k = cost.shape
    low, high = n // k, -(-n // k)
    owner = owner.copy()
    moves = _Moves(cost, owner)
    scale = 1e-9 * (float(cost.max()) - float(cost.min()) + 1.0)
    for _ in range(max_rounds):
        counts = np.bincount(owner, minlength=k)
        edges = np.full((k + 1, k + 1), np.inf)
        edges[:k, :k] = moves.best
        edges[:k, k] = np.where(counts < high, 0.0, np.inf)  # may grow: into the virtual node
        edges[k, :k] = np.where(counts > low, 0.0, np.inf)  # may shrink: out of it
        cycle = _negative_cycle(edges, scale)
        if cycle is None:
            break
        movers = [(moves.who[a, b], b) for a, b in zip(cycle, cycle[1:] + cycle[:1]) if a < k and b < k]
        for i, b in movers:
            owner[i] = b
        for a in set(cycle) - {k}:
            moves.update(a)
    return owner


def _negative_cycle(edges: np.ndarray, tolerance: float) -> list[int] | None:
    """Nodes of a cycle whose edges sum below -`tolerance` (Bellman-Ford), in order, or None."""
    m = len(edges)
    dist, pred = np.zeros(m), np.full(m, -1)
    last = -1
    for _ in range(m):
        via = dist[:, None] + edges
        frm = via.argmin(axis=0)
        new = via[frm, np.arange(m)]
        better = new < dist - tolerance
        if not better.any():
            return None
        dist = np.where(better, new, dist)
        pred = np.where(better, frm, pred)
        last = int(np.flatnonzero(better)[0])
    for _ in range(m):  # walk back m steps: surely inside the cycle now
        last = int(pred[last])
    cycle, node = [last], int(pred[last])
    while node != last:
        cycle.append(node)
        node = int(pred[node])
    return cycle[::-1]


def _power_weights(cost: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Weights w with owner[i] = argmin_j cost[i, j] - w[j] for an optimal balanced `owner`: the
    mean of the smallest and largest potentials the moves between clusters allow, so that
    positions sit inside their cells rather than on the borders where possible."""
    k = cost.shape[1]
    edges = _Moves(cost, owner).best  # need w_b - w_a <= edges[a, b]
    lowest, _ = _shortest(np.zeros(k), edges)
    highest, _ = _shortest(np.zeros(k), edges.T)
    return 0.5 * (lowest - highest)


def balanced_kmeans(xy: np.ndarray, k: int, area: Polygon, *, seed: int = 0,
                    iterations: int = 30) -> tuple[np.ndarray, list[Polygon | MultiPolygon]]:
    """K convex cells holding floor(N / K) or ceil(N / K) positions each: k-means whose assignment
    step is the optimal balanced assignment (capacity-constrained k-means; the assignment is a
    power diagram, so its cells are convex, as in Balzer et al. 2009's capacity-constrained
    Voronoi tessellations). Initial centres: k-means++ with `seed`.

    Returns (label 0..K-1 of each position, the cells clipped to `area`).
    """
    xy = np.asarray(xy, dtype=np.float64)
    centres = _kmeans_pp(xy, k, np.random.default_rng(seed))
    owner = np.full(len(xy), -1)
    for it in range(iterations):
        cost = ((xy[:, None, :] - centres[None]) ** 2).sum(axis=2)
        previous, owner = owner, balanced_assignment(cost) if it == 0 else _improve(cost, owner, 50 * len(xy))
        if np.array_equal(owner, previous):
            break
        centres = np.array([xy[owner == j].mean(axis=0) for j in range(k)])
    cost = ((xy[:, None, :] - centres[None]) ** 2).sum(axis=2)
    return owner, power_cells(centres, _power_weights(cost, owner), area)


def kd_split(xy: np.ndarray, k: int, area: Polygon) -> tuple[np.ndarray, list[Polygon | MultiPolygon]]:
    """K rectangles by recursive splits of the longer side at the quantile that shares the
    positions in proportion to the regions on each side (so counts differ by at most one or two).

    Returns (label 0..K-1 of each position, the rectangles clipped to `area`).
    """
    xy = np.asarray(xy, dtype=np.float64)
    labels = np.zeros(len(xy), dtype=np.int64)
    boxes: list[tuple[float, float, float, float]] = []

    def split(idx: np.ndarray, box: tuple[float, float, float, float], n: int) -> None:
        if n == 1:
            labels[idx] = len(boxes)
            boxes.append(box)
            return
        x0, y0, x1, y1 = box
        pts = xy[idx]
        spread = pts.max(axis=0) - pts.min(axis=0) if len(idx) else np.array([x1 - x0, y1 - y0])
        axis = 0 if spread[0] >= spread[1] else 1
        left_n = n // 2
        order = idx[np.argsort(pts[:, axis], kind="stable")]
        cut = round(len(idx) * left_n / n)
        values = xy[order, axis]
        if 0 < cut < len(idx):
            at = 0.5 * (values[cut - 1] + values[cut])
        else:  # no positions to share: halve the box
            at = 0.5 * (box[axis] + box[axis + 2])
        lo_box = (x0, y0, at, y1) if axis == 0 else (x0, y0, x1, at)
        hi_box = (at, y0, x1, y1) if axis == 0 else (x0, at, x1, y1)
        split(order[:cut], lo_box, left_n)
        split(order[cut:], hi_box, n - left_n)

    x0, y0, x1, y1 = area.bounds
    split(np.arange(len(xy)), (x0, y0, x1, y1), k)
    return labels, [polygonal(shapely.intersection(shapely.box(*b), area)) for b in boxes]


PARTITIONS: dict[str, Callable[..., tuple[np.ndarray, list]]] = {
    "balanced-kmeans": balanced_kmeans,
    "kd": kd_split,
}
