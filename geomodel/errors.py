"""Exceptions with messages meant for the person who supplied the input."""
from __future__ import annotations


class GeomodelError(Exception):
    """Base class: the message says what is wrong and, where possible, how to fix it."""


class DataError(GeomodelError, ValueError):
    """A labels CSV or dataset setting is unusable (names the file, row and column)."""


class ImageError(GeomodelError, ValueError):
    """An image cannot be used (names the file and the reason)."""


class CheckpointError(GeomodelError, ValueError):
    """A checkpoint file is missing, corrupt, unsafe or incompatible."""


class RegionsError(GeomodelError, ValueError):
    """A regions GeoJSON is unusable (names the file, the feature and the problem)."""


class WeightsUnavailableError(GeomodelError, RuntimeError):
    """Pretrained weights could not be loaded (says which file to place where)."""


class CollectError(GeomodelError, ValueError):
    """A photo, video, GPS track or collection setting cannot be used (names the file and the problem)."""
