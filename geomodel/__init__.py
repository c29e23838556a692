"""geomodel: region-aware image geolocation.

Two stages: a region classifier picks which of N predefined regions a photo was
taken in, then a region-aware regressor predicts its coordinates from image
features combined with an embedding of the predicted region.

Importing the package does no work; heavy modules load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names -> defining module; resolved lazily so `import geomodel` stays cheap.
_EXPORTS = {
    "DataConfig": "geomodel.config",
    "ModelConfig": "geomodel.config",
    "TrainConfig": "geomodel.config",
    "BACKBONES": "geomodel.models.backbones",
    "build_backbone": "geomodel.models.backbones",
    "RegionClassifier": "geomodel.models.region",
    "CoordRegressor": "geomodel.models.coords",
    "Predictor": "geomodel.predictor",
    "GeomodelError": "geomodel.errors",
    "DataError": "geomodel.errors",
    "ImageError": "geomodel.errors",
    "CheckpointError": "geomodel.errors",
    "RegionsError": "geomodel.errors",
    "Regions": "geomodel.regions",
    "read_regions": "geomodel.regions",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'geomodel' has no attribute {name!r}")
