"""Test helper: a synthetic campus's true regions as a FeatureCollection in the agreed regions.geojson format."""
from __future__ import annotations

from geomodel.collect.walk import regions_geojson


def campus_geojson(plan) -> dict:
    """One rectangle per region of a `geomodel.synthetic.CampusPlan`, in its planar frame ([x, y] = [lon, lat])."""
    return regions_geojson(plan, origin=None)
