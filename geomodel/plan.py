"""plan.json: where a planar map's background image lies (`bounds`) and which image it is.

    {"bounds": [[south, west], [north, east]], "image": "plan.png"}

`image` is optional (default plan.png), a file beside plan.json. The app draws it under
planar maps, `python -m train check` checks it, the Hub download fetches its image.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from geomodel.errors import DataError

PLAN_FILE = "plan.json"
DEFAULT_IMAGE = "plan.png"


@dataclass(frozen=True)
class Plan:
    bounds: tuple[tuple[float, float], tuple[float, float]]  # ((south, west), (north, east)), y/x if planar
    image: str  # file name, beside plan.json


def read_plan(path: str | Path) -> Plan:
    """The plan in `path`; a DataError naming the file and the problem when it is not one."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
        (s, w), (n, e) = meta["bounds"]
        bounds = ((float(s), float(w)), (float(n), float(e)))
        image = meta.get("image", DEFAULT_IMAGE)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f'{path}: not a plan (needs "bounds": [[south, west], [north, east]]): {exc}') from None
    if not all(math.isfinite(v) for pair in bounds for v in pair):
        raise DataError(f"{path}: the bounds must be finite numbers, got {meta['bounds']}")
    if not isinstance(image, str) or not image or Path(image).name != image:
        raise DataError(f'{path}: "image" must be a file name beside plan.json, got {image!r}')
    return Plan(bounds, image)
