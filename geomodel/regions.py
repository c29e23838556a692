"""Named region polygons: the `regions.geojson` that every model directory and collection carries.

The file is a GeoJSON FeatureCollection with one Feature per region, sorted by region id:
`properties` = `{"region_id": <int, 1..N>, "name": <str>}` (other properties are ignored),
`geometry` a Polygon or MultiPolygon. Coordinates are in the model's frame: GeoJSON
`[longitude, latitude]` for "wgs84"; `[x, y]` with x = longitude and y = latitude (the labels
CSV's columns) for "planar". Regions must not overlap. `Regions.write` adds a top-level
`"frame"` member (GeoJSON allows foreign members) so a file says which frame it is in.

Geometry is done by shapely (GEOS inside its wheels): validity with the reason
(`is_valid_reason`), overlaps through an STRtree, point-in-polygon vectorised with
`intersects_xy`. Names are user text and stay plain strings here; whoever displays them
escapes them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import shapely
from numpy.typing import ArrayLike
from shapely.geometry import MultiPolygon, Polygon, mapping, shape

from geomodel.atomic import atomic_write_text
from geomodel.errors import RegionsError

FRAMES = ("planar", "wgs84")
FILE_NAME = "regions.geojson"  # the name in model directories and collections
MAX_FILE_BYTES = 20 * 1024 * 1024  # larger files are refused before they are parsed
MAX_NAME_CHARS = 200
# Two regions may share an area up to this share of the smaller one's area: the slivers that
# rounding and hand-drawn shared borders leave. Anything larger is an overlap and an error.
OVERLAP_TOLERANCE = 1e-6

Geometry = Polygon | MultiPolygon


class Regions:
    """N named, non-overlapping polygons in one coordinate frame; region ids are 1..N in order.

    Construction validates (the same checks as `read_regions`) and raises RegionsError.
    """

    def __init__(self, frame: str, names: Sequence[str], geometries: Sequence[Geometry], *,
                 source: str = "regions") -> None:
        if frame not in FRAMES:
            raise RegionsError(f"{source}: unknown coordinate frame {frame!r}; choose one of: {', '.join(FRAMES)}")
        if len(names) != len(geometries):
            raise RegionsError(f"{source}: {len(names)} names for {len(geometries)} geometries")
        if not geometries:
            raise RegionsError(f"{source}: no regions")
        labels = [_label(i, i + 1, n) for i, n in enumerate(names)]
        for label, name, geom in zip(labels, names, geometries):
            problem = _name_problem(name) or _geometry_problem(geom, frame)
            if problem:
                raise RegionsError(f"{source}: {label}: {problem}")
        _check_overlaps(list(geometries), labels, source)
        self._set(frame, names, geometries)

    def _set(self, frame: str, names: Sequence[str], geometries: Sequence[Geometry]) -> None:
        self.frame = frame
        self.names: list[str] = list(names)
        self.geometries: list[Geometry] = list(geometries)
        for g in self.geometries:
            shapely.prepare(g)  # point-in-polygon tests reuse the prepared index

    @classmethod
    def _checked(cls, frame: str, names: Sequence[str], geometries: Sequence[Geometry]) -> "Regions":
        """A Regions from parts `read_regions` has already validated (the checks are not run twice)."""
        regions = cls.__new__(cls)
        regions._set(frame, names, geometries)
        return regions

    @classmethod
    def from_boxes(cls, frame: str, names: Sequence[str], boxes: ArrayLike) -> "Regions":
        """Rectangular regions from (N, 4) `west, south, east, north` (x = longitude, y = latitude)."""
        return cls(frame, names, list(shapely.box(*np.asarray(boxes, dtype=np.float64).T)))

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"Regions(frame={self.frame!r}, n={len(self)}, names={self.names!r})"

    def assign(self, lat: ArrayLike, lon: ArrayLike, *, nearest: bool = False) -> np.ndarray:
        """(M,) int64 region id (1-based) of each point; 0 where a point lies outside every region.

        A point on a region's boundary belongs to it; on a border shared by two regions, to the
        lower id. Non-finite coordinates give 0. `nearest`: a point outside every region gets the
        region nearest to it instead (distance in the frame's coordinates, degrees for WGS84).
        """
        lat, lon = np.broadcast_arrays(np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64))
        ids = np.zeros(lat.shape, dtype=np.int64)
        for rid in range(len(self), 0, -1):  # lower ids last, so they win on shared borders
            ids[shapely.intersects_xy(self.geometries[rid - 1], lon, lat)] = rid
        outside = (ids == 0) & np.isfinite(lat) & np.isfinite(lon)
        if nearest and outside.any():
            points = shapely.points(lon[outside], lat[outside])
            geoms = np.asarray(self.geometries, dtype=object)
            ids[outside] = shapely.distance(points[:, None], geoms[None, :]).argmin(axis=1) + 1
        return ids

    @property
    def centroids(self) -> np.ndarray:
        """(N, 2) latitude/longitude of each region's centre of area (may lie outside a concave region)."""
        c = shapely.centroid(np.asarray(self.geometries, dtype=object))
        return np.stack([shapely.get_y(c), shapely.get_x(c)], axis=1)

    @property
    def label_points(self) -> np.ndarray:
        """(N, 2) latitude/longitude of a point inside each region, where a map can put its name."""
        p = shapely.point_on_surface(np.asarray(self.geometries, dtype=object))
        return np.stack([shapely.get_y(p), shapely.get_x(p)], axis=1)

    @property
    def bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """`((south, west), (north, east))` of all regions together."""
        x0, y0, x1, y1 = shapely.total_bounds(np.asarray(self.geometries, dtype=object))
        return (float(y0), float(x0)), (float(y1), float(x1))

    def region_bounds(self) -> np.ndarray:
        """(N, 4) `south, west, north, east` of each region."""
        b = shapely.bounds(np.asarray(self.geometries, dtype=object))  # minx, miny, maxx, maxy
        return b[:, [1, 0, 3, 2]]

    def to_geojson(self) -> dict:
        """The agreed FeatureCollection (exteriors counter-clockwise, as RFC 7946 asks)."""
        features = []
        for rid, (name, geom) in enumerate(zip(self.names, self.geometries), start=1):
            oriented = shapely.orient_polygons(geom, exterior_cw=False)
            features.append({"type": "Feature", "properties": {"region_id": rid, "name": name},
                             "geometry": json.loads(json.dumps(mapping(oriented)))})
        return {"type": "FeatureCollection", "frame": self.frame, "features": features}

    def to_json(self) -> str:
        """`to_geojson()` as text, one feature per line."""
        doc = self.to_geojson()
        lines = ",\n".join(json.dumps(f, ensure_ascii=False) for f in doc["features"])
        return f'{{"type": "FeatureCollection", "frame": {json.dumps(self.frame)}, "features": [\n{lines}\n]}}\n'

    def write(self, path: str | Path) -> Path:
        """Write the GeoJSON atomically (a killed write leaves the old file or the new one); returns `path`."""
        path = Path(path)
        atomic_write_text(path, self.to_json(), error=RegionsError)
        return path


def read_regions(path_or_dict: str | Path | Mapping[str, Any], *, frame: str | None = None) -> Regions:
    """Read and validate a regions GeoJSON (a file path or an already-parsed dict).

    `frame`: the frame the caller needs ("wgs84" or "planar"). None takes the file's own
    `"frame"` member, else "wgs84" (GeoJSON's default). Every problem is a RegionsError naming
    the file and the feature: unreadable, too large or not JSON; not a FeatureCollection; no
    features; a geometry that is not a (non-empty, valid) Polygon or MultiPolygon; coordinates
    out of range for the frame; a missing, non-integer or duplicate `region_id`, or ids that are
    not exactly 1..N; a name that is not text; two regions that overlap.
    """
    if isinstance(path_or_dict, Mapping):
        doc, source = path_or_dict, "regions GeoJSON"
    else:
        source = str(path_or_dict)
        doc = _load_json(Path(path_or_dict))
    if not isinstance(doc, Mapping) or doc.get("type") != "FeatureCollection":
        found = doc.get("type") if isinstance(doc, Mapping) else type(doc).__name__
        raise RegionsError(f"{source}: expected a GeoJSON FeatureCollection (one Feature per region), "
                           f"found {found!r}")
    file_frame = doc.get("frame")
    if file_frame is not None and file_frame not in FRAMES:
        raise RegionsError(f"{source}: unknown \"frame\" {file_frame!r}; choose one of: {', '.join(FRAMES)}")
    if frame is not None and frame not in FRAMES:
        raise RegionsError(f"unknown coordinate frame {frame!r}; choose one of: {', '.join(FRAMES)}")
    if frame is not None and file_frame is not None and frame != file_frame:
        raise RegionsError(f"{source}: the file's coordinates are {file_frame!r} but {frame!r} ones are needed "
                           "(a model's regions must be in the model's frame)")
    frame = frame or file_frame or "wgs84"
    features = doc.get("features")
    if not isinstance(features, list) or not features:
        raise RegionsError(f"{source}: the FeatureCollection has no features, so no region polygons")

    by_id: dict[int, tuple[str, str, Geometry]] = {}  # region id -> (label, name, geometry)
    for k, feature in enumerate(features, start=1):
        rid, name, geom = _parse_feature(feature, k, frame, source)
        label = _label(k - 1, rid, name)
        if rid in by_id:
            raise RegionsError(f"{source}: {label}: region_id {rid} is used twice (also by {by_id[rid][0]})")
        by_id[rid] = (label, name, geom)
    n = len(by_id)
    if sorted(by_id) != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(by_id))
        extra = sorted(set(by_id) - set(range(1, n + 1)))
        raise RegionsError(f"{source}: region ids must be exactly 1..{n} (one per feature); missing "
                           f"{_few(missing)}, unexpected {_few(extra)}")
    labels = [by_id[i][0] for i in range(1, n + 1)]
    _check_overlaps([by_id[i][2] for i in range(1, n + 1)], labels, source)
    return Regions._checked(frame, [by_id[i][1] for i in range(1, n + 1)], [by_id[i][2] for i in range(1, n + 1)])


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise RegionsError(f"regions file not found: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise RegionsError(f"{path}: {size / 2**20:.1f} MB is too large for a regions file (at most "
                           f"{MAX_FILE_BYTES // 2**20} MB); simplify the polygons, e.g. in QGIS or mapshaper")
    if size == 0:
        raise RegionsError(f"{path}: the file is empty (expected a GeoJSON FeatureCollection)")
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise RegionsError(f"{path}: not UTF-8 text, so not GeoJSON") from None
    except json.JSONDecodeError as exc:
        raise RegionsError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise RegionsError(f"{path}: JSON nested too deeply to be GeoJSON") from None
    except OSError as exc:
        raise RegionsError(f"{path}: could not be read ({exc.strerror or exc})") from None


def _parse_feature(feature: Any, k: int, frame: str, source: str) -> tuple[int, str, Geometry]:
    """(region id, name, geometry) of the k-th (1-based) feature, or a RegionsError naming it."""
    where = f"{source}: feature #{k}"
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise RegionsError(f"{where}: not a GeoJSON Feature")
    props = feature.get("properties")
    props = props if isinstance(props, Mapping) else {}
    rid = props.get("region_id")
    if rid is None:
        raise RegionsError(f"{where}: no \"region_id\" property (each region needs an integer id, 1..N)")
    if isinstance(rid, bool) or not isinstance(rid, (int, float)) or not math.isfinite(rid) or rid != int(rid):
        raise RegionsError(f"{where}: region_id {rid!r} is not an integer")
    rid = int(rid)
    name = props.get("name")
    name = f"Region {rid}" if name is None else name
    where = f"{source}: {_label(k - 1, rid, name if isinstance(name, str) else None)}"
    problem = _name_problem(name)
    if problem:
        raise RegionsError(f"{where}: {problem}")
    geometry = feature.get("geometry")
    kind = geometry.get("type") if isinstance(geometry, Mapping) else None
    if kind not in ("Polygon", "MultiPolygon"):
        found = "no geometry" if geometry is None else f"a {kind or type(geometry).__name__} geometry"
        raise RegionsError(f"{where}: has {found}; a region must be a Polygon or MultiPolygon")
    try:
        geom = shape(geometry)
    except Exception as exc:  # noqa: BLE001 - shapely/GEOS reject malformed coordinates with many types
        raise RegionsError(f"{where}: malformed {kind} coordinates ({str(exc).splitlines()[0] if str(exc) else exc!r})"
                           ) from None
    problem = _geometry_problem(geom, frame)
    if problem:
        raise RegionsError(f"{where}: {problem}")
    return rid, name, geom


def _label(index: int, rid: int, name: str | None) -> str:
    """How messages name a feature: its position in the file, its id and its name."""
    return f"feature #{index + 1} (region_id {rid}" + (f", {name!r})" if name is not None else ")")


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"the name must be text (a JSON string), found {type(name).__name__} {name!r}"
    if len(name) > MAX_NAME_CHARS:
        return f"the name is {len(name)} characters long (at most {MAX_NAME_CHARS})"
    return None


def _geometry_problem(geom: Any, frame: str) -> str | None:
    """What is wrong with one region's geometry, or None."""
    if not isinstance(geom, (Polygon, MultiPolygon)):
        kind = getattr(geom, "geom_type", type(geom).__name__)
        return f"a {kind} geometry; a region must be a Polygon or MultiPolygon"
    if geom.is_empty:
        return "the polygon is empty"
    xy = shapely.get_coordinates(geom)
    if not np.isfinite(xy).all():
        return "has coordinates that are not finite numbers"
    if frame == "wgs84":
        lon, lat = xy[:, 0], xy[:, 1]
        if (np.abs(lat) > 90).any() or (np.abs(lon) > 180).any():
            i = int(np.flatnonzero((np.abs(lat) > 90) | (np.abs(lon) > 180))[0])
            return (f"coordinate [{lon[i]:g}, {lat[i]:g}] is not a WGS84 [longitude, latitude] (|lat| <= 90, "
                    "|lon| <= 180); planar coordinates need frame 'planar'")
    if not shapely.is_valid(geom):
        return f"invalid polygon: {shapely.is_valid_reason(geom)} (fix it, e.g. with shapely.make_valid or QGIS)"
    if geom.area <= 0:
        return "the polygon has zero area"
    return None


def _check_overlaps(geoms: list[Geometry], labels: list[str], source: str) -> None:
    """Raise RegionsError naming the first two regions whose shared area exceeds the tolerance."""
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    x0, y0, x1, y1 = shapely.total_bounds(np.asarray(geoms, dtype=object))
    # Snap-rounded overlay: floating-point overlay can return nonsense (one whole polygon) for
    # neighbours whose shared border's vertices differ in the last digits.
    grid = 1e-9 * max(x1 - x0, y1 - y0)
    for i, j in zip(left.tolist(), right.tolist()):
        if i >= j:
            continue
        try:
            shared = shapely.intersection(geoms[i], geoms[j], grid_size=grid).area
        except shapely.errors.GEOSException as exc:
            raise RegionsError(f"{source}: {labels[i]} and {labels[j]} could not be compared ({exc})") from None
        if shared > OVERLAP_TOLERANCE * min(geoms[i].area, geoms[j].area):
            share = shared / min(geoms[i].area, geoms[j].area)
            raise RegionsError(f"{source}: {labels[i]} and {labels[j]} overlap (shared area {shared:.6g}, "
                               f"{share:.1%} of the smaller); regions must not overlap")


def _few(values: list[int], limit: int = 5) -> str:
    if not values:
        return "none"
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


# ----------------------------------------------------------------------------- regions from photo positions

MIN_PHOTOS_PER_REGION = 5  # fewer photos than this cannot train a region (nor hold one out to check it)
AUTO_METHODS = ("balanced-kmeans", "kd")


def _plane_positions(lat: np.ndarray, lon: np.ndarray, frame: str, keep: np.ndarray):
    """(local metric plane, every position in it, `keep` narrowed to the finite, in-range positions
    that are not far from all the others): what both ways of drawing regions start from."""
    from geomodel.partition import LocalPlane, far_outliers

    keep = keep & np.isfinite(lat) & np.isfinite(lon)
    if frame == "wgs84":
        keep &= (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    plane = LocalPlane.around(lat[keep], lon[keep], frame)
    xy = plane.to_xy(lat, lon)
    keep[keep] &= ~far_outliers(xy[keep])
    return plane, xy, keep


def derive_regions(lat: ArrayLike, lon: ArrayLike, region_ids: ArrayLike, *, frame: str,
                   names: Sequence[str]) -> Regions:
    """Polygons for labelled photos: each region is the union of its photos' Voronoi cells.

    `region_ids` are 1-based (1..len(names)). Label outliers are left out first: positions far
    from all the others (`partition.far_outliers`, e.g. a label 30 km off campus) and positions
    far from the rest of their own region (a photo labelled with the wrong region). The cells tile the
    photos' buffered convex hull, so regions never overlap; where labels interleave a region
    gets several pieces. Computed in a local metric plane (metres for WGS84).
    Raises RegionsError when a region has no photo to draw it from.
    """
    from geomodel.partition import far_outliers, study_area, voronoi_tiling

    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    labels = np.asarray(region_ids, dtype=np.int64) - 1
    n = len(names)
    plane, xy, keep = _plane_positions(lat, lon, frame, (labels >= 0) & (labels < n))
    for region in range(n):  # far from the rest of its own region: trimmed, unless that empties it
        mine = np.flatnonzero(keep & (labels == region))
        keep[mine[far_outliers(xy[mine])]] = False
    empty = [f"{r + 1} ({names[r]!r})" for r in range(n) if not (keep & (labels == r)).any()]
    if empty:
        raise RegionsError(f"no polygon can be drawn for region(s) {', '.join(empty[:5])}: no photos with "
                           "usable positions")
    tiles = voronoi_tiling(xy[keep], labels[keep], n, study_area(xy[keep]))
    return Regions(frame, names, [plane.geometry_to_frame(t) for t in tiles], source="derived regions")


def auto_regions(lat: ArrayLike, lon: ArrayLike, k: int, *, frame: str, method: str = "kd",
                 min_photos: int = MIN_PHOTOS_PER_REGION, seed: int = 0) -> tuple[np.ndarray, Regions]:
    """Partition unlabelled photo positions into `k` contiguous regions with balanced photo counts.

    Returns (region id of every position, 1-based, 0 for positions left out; the Regions).
    Positions far from all the others (label outliers) are left out before partitioning, so
    they never get a region of their own; they get id 0 unless they fall inside a region's
    polygon. `method`: "kd" (recursive splits at count quantiles: rectangles) or
    "balanced-kmeans" (capacity-constrained k-means: convex power-diagram cells); see the
    README for how the two compare. Regions are numbered by their centres from north to south and
    named "Region 1".."Region K". Raises RegionsError when `k` is not possible: more than the
    photos allow at `min_photos` per region, or a region that ends up with fewer.
    """
    from geomodel.partition import PARTITIONS, study_area

    if method not in PARTITIONS:
        raise RegionsError(f"unknown region partitioning {method!r}; choose one of: {', '.join(PARTITIONS)}")
    if frame not in FRAMES:
        raise RegionsError(f"unknown coordinate frame {frame!r}; choose one of: {', '.join(FRAMES)}")
    lat, lon = np.asarray(lat, dtype=np.float64).ravel(), np.asarray(lon, dtype=np.float64).ravel()
    if lat.shape != lon.shape:
        raise ValueError(f"lat and lon differ in length ({len(lat)} vs {len(lon)})")
    plane, xy, keep = _plane_positions(lat, lon, frame, np.ones(len(lat), dtype=bool))
    n = int(keep.sum())
    left_out = len(lat) - n
    note = f" ({left_out} more left out: far from the others or without a usable position)" if left_out else ""
    if k < 1:
        raise RegionsError(f"the number of regions must be at least 1, got {k}")
    if n < k * min_photos:
        most = n // min_photos
        advice = f"use at most {most} regions" if most >= 1 else "collect more photos"
        raise RegionsError(f"{k} regions need at least {k * min_photos} photos ({min_photos} per region) but "
                           f"{n} photos have usable positions{note}: {advice}")
    _, repeats = np.unique(xy[keep], axis=0, return_counts=True)
    if len(repeats) < k:
        raise RegionsError(f"{k} regions need at least {k} different positions; the photos have "
                           f"{len(repeats)}: use fewer regions")
    area = study_area(xy[keep])
    kwargs = {"seed": seed} if method == "balanced-kmeans" else {}
    _, cells = PARTITIONS[method](xy[keep], k, area, **kwargs)
    if any(c.is_empty for c in cells):  # a region of photos that share one position has no area
        raise RegionsError(f"{k} regions cannot be drawn: {repeats.max()} photos share one position, so a region "
                           "made of them has no area: use fewer regions")
    centres = np.array([c.centroid.coords[0] for c in cells])  # none is empty (checked above)
    order = np.argsort(-centres[:, 1], kind="stable")  # north to south
    geoms = [plane.geometry_to_frame(cells[i]) for i in order]
    regions = Regions(frame, [f"Region {i}" for i in range(1, k + 1)], geoms, source=f"auto regions ({method})")
    ids = regions.assign(lat, lon)
    counts = np.bincount(ids, minlength=k + 1)[1:]
    if counts.min() < min_photos:
        small = int(counts.argmin())
        raise RegionsError(f"with {k} regions, region {small + 1} gets only {counts[small]} photos (at least "
                           f"{min_photos} are needed to train it){note}: use fewer regions")
    return ids, regions


def regions_for_labels(path: str | Path, *, frame: str, csvs: Sequence[str | Path]) -> Regions:
    """Read a regions file for training on labelled CSVs, whose Region_IDs must be its region ids."""
    from geomodel.data.labels import read_labels
    from geomodel.errors import DataError

    regions = read_regions(path, frame=frame)
    for csv in csvs:
        df = read_labels(csv)
        bad = np.flatnonzero(df["Region_ID"].to_numpy() > len(regions))
        if len(bad):
            lines = ", ".join(str(int(r) + 2) for r in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise DataError(f"{csv}: Region_ID {int(df['Region_ID'].iloc[bad[0]])} (line {lines}) is not a region of "
                            f"{path}, which has region ids 1..{len(regions)}")
    return regions


def write_model_regions(out_dir: str | Path, csv: str | Path, *, frame: str, names: Sequence[str],
                        exclude: Sequence[str | int] = (), given: Regions | None = None) -> str:
    """Write `out_dir/regions.geojson` for a model trained on `csv`; returns a line saying what was done.

    `given`: the user's regions (`fit --regions`), written as read. Otherwise the polygons are
    derived from the positions of every photo in the training CSV (less `exclude`d rows):
    `derive_regions` leaves label outliers out itself, and keeps the edge photos that the
    training's percentile filter drops. Regions that cannot be derived leave the model without
    the file (the app then draws no outlines), with the reason in the returned line, rather than
    failing training.
    """
    from geomodel.data.labels import apply_exclusions, read_labels

    path = Path(out_dir) / FILE_NAME
    photos = apply_exclusions(read_labels(csv, num_regions=len(names)), list(exclude))
    lat, lon = photos["latitude"].to_numpy(np.float64), photos["longitude"].to_numpy(np.float64)
    ids = photos["Region_ID"].to_numpy(np.int64)
    if given is None:
        try:
            regions = derive_regions(lat, lon, ids, frame=frame, names=names)
        except RegionsError as exc:
            path.unlink(missing_ok=True)  # a stale file from an earlier run would describe other regions
            return f"regions: no {FILE_NAME} written ({exc}); give polygons with --regions FILE.geojson"
        how = "derived from the training photos' positions"
    else:
        regions, how = given, "as given"
    regions.write(path)
    outside = int((regions.assign(lat, lon) != ids).sum())
    note = (f"; {outside} of the {len(ids)} training photos lie outside their region's polygon (label outliers, "
            "or polygons that miss them)") if outside else ""
    return f"regions: {len(regions)} polygons {how} -> {path}{note}"
