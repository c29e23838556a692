"""Checkpoint safety: files that are not checkpoints, truncated ones, pickles carrying code (refused,
never run), unknown versions, incompatible stages, and atomic writes that survive kills."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from geomodel.config import DataConfig, ModelConfig, to_dict
from geomodel.engine.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, load_checkpoint, make_checkpoint
from geomodel.errors import CheckpointError
from geomodel.models import model_from_checkpoint
from geomodel.models.coords import CoordRegressor
from geomodel.models.region import RegionClassifier
from geomodel.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]


def region_checkpoint(num_regions: int = 3) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(kind="region", backbone="resnet18", pretrained=False, num_regions=num_regions)
    model = RegionClassifier(cfg, image_size=32)
    return make_checkpoint(model, kind="region", model_config=to_dict(cfg), data_config=to_dict(DataConfig()),
                           image_size=32, norm=(model.backbone.mean, model.backbone.std), frame="planar",
                           region_names=[f"R{i + 1}" for i in range(num_regions)])


def coords_checkpoint(num_regions: int = 3) -> dict:
    cfg = ModelConfig(kind="coords", backbone="resnet18", pretrained=False, num_regions=num_regions,
                      region_embed_dim=8, hidden_dim=16)
    model = CoordRegressor(cfg, feature_dim=512, image_size=32)
    ckpt = make_checkpoint(model, kind="coords", model_config=to_dict(cfg), data_config=to_dict(DataConfig()),
                           image_size=32, norm=((0.5,) * 3, (0.25,) * 3), frame="planar",
                           region_names=[f"R{i + 1}" for i in range(num_regions)],
                           coord_stats={"mean": (0.0, 0.0), "std": (1.0, 1.0), "low": (0, 0), "high": (1, 1)})
    ckpt["feature_dim"] = 512
    return ckpt


@pytest.fixture(scope="module")
def saved_region(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "region.pt"
    atomic_save(region_checkpoint(), path)
    return path


def test_round_trip(saved_region):
    ckpt = load_checkpoint(saved_region, kind="region")
    assert ckpt["format"] == FORMAT and ckpt["num_regions"] == 3
    model = model_from_checkpoint(ckpt)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 3)


# --------------------------------------------------------------------------- not a checkpoint


def _zip_file(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "not a model")
    return path


@pytest.mark.parametrize("make, phrase", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("this is a text file\n"), "not a"),
    (lambda p: p.write_bytes(os.urandom(4096)), "not a"),
    (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(100)), "not a"),
    (_zip_file, "not a readable checkpoint"),
    (lambda p: torch.save(torch.zeros(3), p), "no 'geomodel-checkpoint' header"),
    (lambda p: torch.save({"state_dict": {}}, p), "no 'geomodel-checkpoint' header"),
])
def test_files_that_are_not_checkpoints(tmp_path, make, phrase):
    path = tmp_path / "region.pt"
    make(path)
    with pytest.raises(CheckpointError, match=phrase) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("keep", [0.5, 0.95, 0.01])
def test_truncated_checkpoint(tmp_path, saved_region, keep):
    data = saved_region.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- code in pickles


class _Payload:
    """Unpickling this runs a shell command: what a booby-trapped "model" file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_checkpoint(path: Path, marker: Path, *, legacy: bool = False) -> Path:
    obj = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "region", "state_dict": _Payload(marker)}
    if legacy:  # a plain pickle stream, as torch.save wrote before its zip format
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    else:
        torch.save(obj, path)
    return path


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_carrying_code_is_refused_and_never_run(tmp_path, legacy):
    marker = tmp_path / "PWNED"
    path = _malicious_checkpoint(tmp_path / "region.pt", marker, legacy=legacy)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load") as err:
        load_checkpoint(path)
    assert "nothing was executed" in str(err.value) and "system" in str(err.value)
    assert not marker.exists()

    # The Predictor's loading path refuses it too.
    atomic_save(coords_checkpoint(), tmp_path / "coords.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        Predictor.from_dir(tmp_path, device="cpu")
    assert not marker.exists()

    # And the payload is real: an unsafe load would have run it.
    with open(path, "rb") as fh:
        pickle.load(fh) if legacy else torch.load(fh, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("protocol", [4, 5])
def test_raw_pickle_is_refused_quietly_and_never_run(tmp_path, protocol):
    """pickle.dump's own protocols: torch's safe loader stops at their first opcode; no torch warning first."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "region.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": FORMAT, "state_dict": _Payload(marker)}, fh, protocol=protocol)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="refused to load: a raw Python pickle") as err:
            load_checkpoint(path)
    assert str(path) in str(err.value) and "nothing was executed" in str(err.value)
    assert [str(w.message) for w in caught] == []
    assert not marker.exists()


# --------------------------------------------------------------------------- incompatible checkpoints


def test_unknown_format_version(tmp_path):
    ckpt = region_checkpoint()
    ckpt["format_version"] = FORMAT_VERSION + 1
    atomic_save(ckpt, tmp_path / "region.pt")
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        load_checkpoint(tmp_path / "region.pt")


def test_wrong_stage(tmp_path):
    atomic_save(coords_checkpoint(), tmp_path / "region.pt")
    with pytest.raises(CheckpointError, match="expected a 'region' checkpoint, found 'coords'"):
        load_checkpoint(tmp_path / "region.pt", kind="region")


def test_weights_that_do_not_match_the_described_model(tmp_path):
    ckpt = region_checkpoint()
    ckpt["model_config"]["num_regions"] = 5  # head shape no longer matches the stored weights
    with pytest.raises(CheckpointError, match="weights do not match"):
        model_from_checkpoint(ckpt, path="region.pt")


def test_predictor_refuses_stages_with_different_region_counts(tmp_path):
    atomic_save(region_checkpoint(3), tmp_path / "region.pt")
    atomic_save(coords_checkpoint(4), tmp_path / "coords.pt")
    with pytest.raises(CheckpointError, match="stage 2 was trained for 4 regions but stage 1 predicts 3"):
        Predictor.from_dir(tmp_path, device="cpu")


def test_predictor_names_a_missing_model(tmp_path):
    with pytest.raises(CheckpointError, match="model directory not found"):
        Predictor.from_dir(tmp_path / "nope")
    atomic_save(region_checkpoint(), tmp_path / "region.pt")
    with pytest.raises(CheckpointError, match="coords.pt"):
        Predictor.from_dir(tmp_path)


# --------------------------------------------------------------------------- atomic writes


class _InterruptWhilePickling:
    def __reduce__(self):
        raise KeyboardInterrupt


def test_interrupted_save_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "region_last.pt"
    atomic_save({"epoch": 1, "w": torch.ones(1000)}, path)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2, "w": torch.ones(1000), "boom": _InterruptWhilePickling()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["region_last.pt"]


def test_failed_write_is_a_checkpoint_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="could not write"):
        atomic_save({"a": 1}, blocker / "region.pt")


_SAVER = """
import sys, torch
from geomodel.engine.checkpoint import atomic_save
path, big = sys.argv[1], torch.arange(4_000_000, dtype=torch.float32)  # 16 MB: a save takes a while
for i in range(1, 10**6):
    atomic_save({"epoch": i, "w": big + i}, path)
    print(i, flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_torn_file(tmp_path):
    path = tmp_path / "region_last.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    last_epoch = 0
    leftovers = 0
    for delay in (0.0, 0.013, 0.031):  # land the kill at different points of a save
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True,
                                env=env, cwd=ROOT)
        first = proc.stdout.readline()  # one save done: the next is in progress
        assert first.strip(), "saver did not start"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        ckpt = torch.load(path, weights_only=True)  # whole and loadable, whatever the kill interrupted
        assert ckpt["epoch"] >= 1 and torch.equal(ckpt["w"][:3], torch.tensor([0.0, 1, 2]) + ckpt["epoch"])
        last_epoch = ckpt["epoch"]
        leftovers += len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")])
    assert last_epoch >= 1
    # Kills mid-save leave temp files behind (hidden, ignored by loading); the next save clears them.
    atomic_save({"epoch": 0}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["region_last.pt"]
    assert leftovers >= 1, "no kill landed inside a save; the test proved less than it should"
