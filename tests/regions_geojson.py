"""Test helper: a synthetic campus's true regions as a FeatureCollection in the agreed regions.geojson format."""
from __future__ import annotations

import numpy as np


def campus_geojson(plan) -> dict:
    """One rectangle per region of a `geomodel.synthetic.CampusPlan` ([x, y] = [lon, lat])."""
    features = []
    for r in range(len(plan.row_first_region)):
        s, n = float(plan.row_edges[r]), float(plan.row_edges[r + 1])
        xs = plan.col_edges[r][np.isfinite(plan.col_edges[r])]
        for c in range(len(xs) - 1):
            idx = int(plan.row_first_region[r]) + c
            w, e = float(xs[c]), float(xs[c + 1])
            features.append({"type": "Feature", "properties": {"region_id": idx + 1, "name": plan.region_names[idx]},
                             "geometry": {"type": "Polygon",
                                          "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}})
    features.sort(key=lambda f: f["properties"]["region_id"])
    return {"type": "FeatureCollection", "features": features}
