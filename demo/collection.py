"""The map of a collection (`python -m train collect` writes it as ``map.html``): a pure builder.

Every photo is a dot at its own position, coloured by its region; the regions are drawn with
their names and filled by how many photos each holds. Offline, like every map of the app.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from demo.colours import count_scale, region_colours
from demo.map_regions import RegionFill, region_list
from demo.maps import MapPoint, render_map

MAX_UNCLUSTERED = 3000  # more photos than this are clustered on the map


def collection_map(labels: pd.DataFrame, regions: Any, *, frame: str, title: str | None = None,
                   images_url: str | None = "images/") -> str:
    """A complete HTML page: ``labels`` (filename, latitude, longitude, Region_ID, optional
    timestamp and angle) over ``regions`` (a `geomodel.regions.Regions` or its GeoJSON).

    ``images_url``: where the page finds the photos, relative to itself, for the popups'
    pictures (None: no pictures).
    """
    items = region_list(regions)
    names = [r["name"] for r in items]
    colours = region_colours(len(items))
    counts = np.bincount(labels["Region_ID"].to_numpy(dtype=np.int64), minlength=len(items) + 1)[1:len(items) + 1]
    points = []
    for row in labels.sort_values("Region_ID", kind="stable").itertuples(index=False):  # legend in id order
        rid = int(row.Region_ID)
        extra = {}
        if isinstance(getattr(row, "timestamp", None), str) and row.timestamp:
            extra["Time"] = row.timestamp
        angle = getattr(row, "angle", None)
        if angle is not None and np.isfinite(angle):
            extra["Heading"] = f"{float(angle):.0f}°"
        points.append(MapPoint(str(row.filename), row.latitude, row.longitude, names[rid - 1],
                               colour=colours[rid - 1], extra=extra,
                               thumbnail=_photo_url(images_url, str(row.filename))))
    fill = RegionFill("Photos", [float(c) for c in counts], count_scale(float(max(counts.max(), 1)),
                                                                         "Photos per region"))
    # Clusters would hide the dots' region colours; a few thousand dots still draw quickly.
    return render_map(points, frame=frame, regions=regions, region_fills=[fill], title=title, role="photos",
                      cluster=len(points) > MAX_UNCLUSTERED)



def _photo_url(base: str | None, filename: str) -> str | None:
    """A relative link to the photo, for the popup; None for formats a browser may not show."""
    if base is None or Path(filename).suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
        return None
    return base + quote(filename)
