"""The maps' region layer: region polygons (the agreed `regions.geojson` format), their names,
and fills that colour each region by a value (a probability, an accuracy, an error).

Pure data in, a JSON-able payload out; `demo.maps` draws it. Region names are user text: they
are HTML-escaped here, once, and only ever inserted as that escaped text.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from demo.colours import ColourScale, probability_scale

MAX_REGIONS = 1000  # a map with more regions is unreadable; read_regions refuses far larger files
_GEOMETRIES = ("Polygon", "MultiPolygon")


@dataclass
class RegionFill:
    """One way of colouring the regions: a value per region (region_id order) and its scale.

    `values[i]` is region i + 1's value (None: no data). `popups[i]`, when given, is HTML shown
    when region i + 1 is clicked; it must already be escaped (`demo.maps` inserts it as is).
    `follow_points=True`: the fill shows the values of the selected map point instead
    (`MapPoint.region_values`, e.g. a photo's predicted probabilities); `values` are then only
    used when no point has any.
    """

    name: str  # layer name in the map's layer list ("Probability", "Accuracy"); plain text
    values: Sequence[float | None]
    scale: ColourScale
    popups: Sequence[str] | None = None
    follow_points: bool = False

    @classmethod
    def probability(cls, values: Sequence[float | None] | None = None, n_regions: int = 0) -> "RegionFill":
        """The Predict map's fill: the selected photo's predicted probability per region."""
        return cls("Probability", list(values) if values is not None else [None] * n_regions,
                   probability_scale(), follow_points=True)


def region_list(regions: Mapping[str, Any] | Any) -> list[dict]:
    """The regions of a GeoJSON FeatureCollection (or of an object with `.to_geojson()`), checked.

    Returns `[{"id": region_id, "name": str, "geometry": {...}}, ...]` sorted by id. Raises
    ValueError naming the feature for anything the maps cannot draw; full validation of
    `regions.geojson` files (overlaps, frames, sizes) is `geomodel.regions.read_regions`'s job.
    """
    if hasattr(regions, "to_geojson"):
        regions = regions.to_geojson()
    if not isinstance(regions, Mapping) or regions.get("type") != "FeatureCollection":
        raise ValueError("regions must be a GeoJSON FeatureCollection")
    features = regions.get("features")
    if not isinstance(features, list):
        raise ValueError("regions: 'features' must be a list")
    if len(features) > MAX_REGIONS:
        raise ValueError(f"regions: {len(features)} features; a map draws at most {MAX_REGIONS}")
    out = []
    for n, feat in enumerate(features):
        where = f"regions: feature {n}"
        props = feat.get("properties") if isinstance(feat, Mapping) else None
        geom = feat.get("geometry") if isinstance(feat, Mapping) else None
        if not isinstance(props, Mapping):
            raise ValueError(f"{where} has no properties")
        rid = props.get("region_id")
        if isinstance(rid, bool) or not isinstance(rid, int):
            raise ValueError(f"{where}: region_id must be an integer, got {rid!r}")
        if not isinstance(geom, Mapping) or geom.get("type") not in _GEOMETRIES:
            raise ValueError(f"{where} (region {rid}): geometry must be a Polygon or MultiPolygon")
        polygons = [geom.get("coordinates")] if geom["type"] == "Polygon" else geom.get("coordinates")
        if not _polygons_ok(polygons):
            raise ValueError(f"{where} (region {rid}): coordinates must be rings of finite [x, y] numbers")
        out.append({"id": rid, "name": str(props.get("name", f"Region {rid}")), "geometry": dict(geom)})
    out.sort(key=lambda r: r["id"])
    ids = [r["id"] for r in out]
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"regions: region_id values must be exactly 1..{len(ids)}, got {ids[:20]}")
    return out


def regions_payload(regions: list[dict], fills: Sequence[RegionFill]) -> dict:
    """What the map's JS needs: geometry (indexed, no user text), escaped names, label points, fills."""
    n = len(regions)
    for fill in fills:
        if len(fill.values) != n:
            raise ValueError(f"region fill {fill.name!r}: {len(fill.values)} values for {n} regions")
        if fill.popups is not None and len(fill.popups) != n:
            raise ValueError(f"region fill {fill.name!r}: {len(fill.popups)} popups for {n} regions")
    features = [{"type": "Feature", "properties": {"i": i}, "geometry": _rounded(r["geometry"])}
                for i, r in enumerate(regions)]
    return {
        "geojson": {"type": "FeatureCollection", "features": features},
        "names": [html.escape(r["name"], quote=True) for r in regions],
        "labels": [label_point(r["geometry"]) for r in regions],
        "fills": [{"colours": f.scale.colours(f.values), "texts": [f.scale.text(v) for v in f.values],
                   "popups": list(f.popups) if f.popups is not None else None} for f in fills],
    }


def label_point(geometry: Mapping[str, Any]) -> list[float]:
    """[lat, lon] where a region's name is written: a point inside it (shapely's representative point)."""
    from shapely.geometry import shape

    p = shape(geometry).representative_point()
    return [p.y, p.x]


def region_bounds(regions: list[dict]) -> tuple[list[float], list[float]] | None:
    """([lats], [lons]) of every vertex, for fitting the map."""
    lats, lons = [], []
    for r in regions:
        g = r["geometry"]
        for poly in ([g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]):
            for ring in poly:
                lons += [float(c[0]) for c in ring]
                lats += [float(c[1]) for c in ring]
    return (lats, lons) if lats else None


def _polygons_ok(polygons: Any) -> bool:
    if not isinstance(polygons, list) or not polygons:
        return False
    for poly in polygons:
        if not isinstance(poly, list) or not poly:
            return False
        for ring in poly:
            if not isinstance(ring, list) or len(ring) < 4:
                return False
            for c in ring:
                if (not isinstance(c, (list, tuple)) or len(c) < 2
                        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                   for v in c[:2])):
                    return False
    return True


def _rounded(geometry: Mapping[str, Any]) -> dict:
    """Coordinates cut to 7 significant digits (sub-metre in both frames): the page stays light."""
    def ring(r: list) -> list:
        return [[float(f"{c[0]:.7g}"), float(f"{c[1]:.7g}")] for c in r]

    if geometry["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": [ring(r) for r in geometry["coordinates"]]}
    return {"type": "MultiPolygon", "coordinates": [[ring(r) for r in p] for p in geometry["coordinates"]]}
