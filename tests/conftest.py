"""Shared fixtures: tiny synthetic datasets, the shared real-data folder, offline settings."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own feature cache, so none sees another's entries."""
    monkeypatch.setenv("GEOMODEL_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "campus" / "labels.csv").is_file():
        pytest.skip(f"real campus data not found at {SHARED} (it exists only beside the project's own checkout)")
    return SHARED


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """(labels.csv, images dir): 60 rendered 32-px views of a 3-region synthetic campus."""
    from geomodel.synthetic import make_campus, make_dataset

    out = tmp_path_factory.mktemp("syn")
    csv = make_dataset(make_campus(n_regions=3, seed=1), out, n_images=60, image_size=32, seed=0)
    return csv, out / "images"


@pytest.fixture(scope="module")
def private_upload_folder(tmp_path_factory):
    """Gradio's upload folder for this module's app alone: uploads are stored by content, so in the shared
    /tmp/gradio another app stopping would delete the identical `empty.jpg` this module's tests upload."""
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    yield
    if old is None:
        os.environ.pop("GRADIO_TEMP_DIR")
    else:
        os.environ["GRADIO_TEMP_DIR"] = old
