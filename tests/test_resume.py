"""Faults during training: a run killed at any moment (SIGKILL) or stopped with Ctrl-C resumes from
its last checkpoint with --resume and ends exactly where the uninterrupted run ends.

The slow tests run the real CLI (`python -m train fit`) in subprocesses and kill them mid-training.
Every run uses one CPU thread, so the reference run in this process and the subprocesses compute
bit-identical results (thread count changes float summation order).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from geomodel.config import DataConfig, ModelConfig, TrainConfig, to_dict
from geomodel.engine.checkpoint import atomic_save, load_checkpoint, make_checkpoint
from geomodel.engine.stages import prepare_data, train_region
from geomodel.errors import CheckpointError
from geomodel.models.region import RegionClassifier
from train.cli import main

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 10
# Frozen pretrained EfficientNet-Lite0 at 64 px: features are computed once (cached), so an epoch is
# a fraction of a second and checkpoints are small; one augmented view exercises per-epoch resampling.
FIT = ["--backbone", "efficientnet_lite0", "--image-size", "64", "--freeze-backbone", "--aug-views", "1",
       "--epochs", str(EPOCHS), "--patience", str(EPOCHS), "--batch-size", "16", "--device", "cpu", "--seed", "3"]


def fit_args(csv: Path, images: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["fit", "--csv", str(csv), "--images", str(images), "--out", str(out), "--cache-dir", str(cache),
            *FIT, *extra]


class _OneThread:
    """Run in-process training on one thread, as the subprocesses do; restore signals and threads after."""

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        self.sigterm = signal.getsignal(signal.SIGTERM)
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.threads)
        signal.signal(signal.SIGTERM, self.sigterm)


@pytest.fixture(scope="module")
def reference(synthetic_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """(model dir of an uninterrupted run, the feature cache it filled)."""
    csv, images = synthetic_dataset
    out, cache = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("features")
    with _OneThread():
        assert main(fit_args(csv, images, out, cache)) == 0
    return out, cache


def run_until(args: list[str], pattern: str, sig: int, log: Path) -> tuple[int, str]:
    """Run `python -m train ARGS`, send `sig` once a stdout line contains `pattern`; (exit code, output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(log, "w") as err:
        # A pytest started in the background by a shell without job control inherits SIGINT
        # ignored, and so would `train`: give it the default handling a terminal's Ctrl-C meets.
        proc = subprocess.Popen([sys.executable, "-u", "-m", "train", *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if pattern in line:
                proc.send_signal(sig)
                break
        lines += proc.stdout.readlines()
        rc = proc.wait(timeout=120)
    return rc, "".join(lines) + log.read_text()


def resume_epoch(path: Path) -> int:
    """Epochs completed according to a resumable checkpoint (it must load whole)."""
    return int(load_checkpoint(path)["resume"]["epoch"]) + 1


def assert_same_metrics(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key
        else:
            assert got[key] == value, key


def assert_same_run(out: Path, ref: Path) -> None:
    for name in ("region.pt", "region_last.pt", "coords.pt", "coords_last.pt"):
        a, b = load_checkpoint(out / name), load_checkpoint(ref / name)
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for key, value in a["state_dict"].items():
            torch.testing.assert_close(value, b["state_dict"][key], rtol=1e-6, atol=1e-7, msg=f"{name}: {key}")
        assert_same_metrics(a["metrics"], b["metrics"])
    for stage in ("region", "coords"):
        pd.testing.assert_frame_equal(pd.read_csv(out / f"{stage}_history.csv"),
                                      pd.read_csv(ref / f"{stage}_history.csv"), rtol=1e-6)
        assert_same_metrics(json.loads((out / f"{stage}_metrics.json").read_text()),
                            json.loads((ref / f"{stage}_metrics.json").read_text()))


@pytest.mark.slow
def test_sigkill_in_each_stage_then_resume_matches_an_uninterrupted_run(synthetic_dataset, reference, tmp_path):
    csv, images = synthetic_dataset
    ref, cache = reference
    out = tmp_path / "run"
    args = fit_args(csv, images, out, cache)

    # Killed during stage 1: its last checkpoint loads; stage 2 never started.
    rc, log = run_until(args, "[region] epoch 3/", signal.SIGKILL, tmp_path / "1.log")
    assert rc == -signal.SIGKILL, log
    assert 2 <= resume_epoch(out / "region_last.pt") < EPOCHS
    assert not (out / "coords_last.pt").exists() and not (out / "region_metrics.json").exists()

    # Resumed, then killed during stage 2.
    rc, log = run_until([*args, "--resume"], "[coords] epoch 3/", signal.SIGKILL, tmp_path / "2.log")
    assert rc == -signal.SIGKILL, log
    assert "[region] resuming after epoch" in log
    assert "[region] epoch 1/" not in log  # it continued; it did not start over
    assert 2 <= resume_epoch(out / "coords_last.pt") < EPOCHS
    assert resume_epoch(out / "region_last.pt") == EPOCHS

    # Resumed to the end: the same weights, metrics and history as the run that was never killed.
    rc, log = run_until([*args, "--resume"], "no such line", signal.SIGKILL, tmp_path / "3.log")
    assert rc == 0, log
    assert "[coords] resuming after epoch" in log and "[coords] epoch 1/" not in log
    assert_same_run(out, ref)


@pytest.mark.slow
def test_ctrl_c_saves_exits_130_and_says_how_to_resume(synthetic_dataset, reference, tmp_path):
    csv, images = synthetic_dataset
    ref, cache = reference
    out = tmp_path / "run"
    args = fit_args(csv, images, out, cache)

    rc, log = run_until(args, "[region] epoch 4/", signal.SIGINT, tmp_path / "1.log")
    assert rc == 130, log
    assert "Traceback" not in log
    assert "--resume" in log and f"{out / 'region_last.pt'}" in log
    done = resume_epoch(out / "region_last.pt")
    assert 3 <= done < EPOCHS and f"epoch {done}/{EPOCHS} is saved" in log  # 3: stopped during its saves
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # a save it interrupted cleaned up

    rc, log = run_until([*args, "--resume"], "no such line", signal.SIGINT, tmp_path / "2.log")
    assert rc == 0, log
    assert_same_run(out, ref)


@pytest.mark.slow
def test_fine_tuning_resume_is_exact(synthetic_dataset, tmp_path):
    """Unfrozen backbone: augmentation, dropout and drop-connect, BatchNorm statistics and AdamW state."""
    csv, images = synthetic_dataset
    prep = prepare_data(csv, images, data_cfg=DataConfig(image_size=32), seed=1)
    model_cfg = dict(kind="region", backbone="efficientnet_lite0", pretrained=False, head_hidden=16)
    cfg = TrainConfig(epochs=4, batch_size=16, device="cpu", seed=1, patience=10)

    def interrupt_at_epoch_3(line: str) -> None:
        if "epoch 3/" in line:
            raise KeyboardInterrupt

    with _OneThread():
        want = train_region(prep, ModelConfig(**model_cfg), cfg, tmp_path / "ref", log=lambda _: None)
        with pytest.raises(KeyboardInterrupt):
            train_region(prep, ModelConfig(**model_cfg), cfg, tmp_path / "run", log=interrupt_at_epoch_3)
        assert resume_epoch(tmp_path / "run" / "region_last.pt") == 2
        got = train_region(prep, ModelConfig(**model_cfg), cfg, tmp_path / "run", resume=True, log=lambda _: None)
    assert_same_metrics(got, want)
    a = load_checkpoint(tmp_path / "run" / "region_last.pt")
    b = load_checkpoint(tmp_path / "ref" / "region_last.pt")
    for key, value in a["state_dict"].items():  # includes BatchNorm running statistics
        torch.testing.assert_close(value, b["state_dict"][key], rtol=1e-6, atol=1e-7, msg=key)
    assert a["resume"]["scheduler"] == b["resume"]["scheduler"]
    assert a["resume"]["early_stopping"] == b["resume"]["early_stopping"]


# --------------------------------------------------------------------------- refusing to resume the wrong run


@pytest.fixture
def small_prep(synthetic_dataset):
    csv, images = synthetic_dataset
    return prepare_data(csv, images, data_cfg=DataConfig(image_size=32), check=False)


def _write_last(out: Path, *, image_size: int = 32, resume: dict | None = None) -> None:
    cfg = ModelConfig(kind="region", backbone="resnet18", pretrained=False, num_regions=3)
    model = RegionClassifier(cfg, image_size=image_size)
    atomic_save(make_checkpoint(model, kind="region", model_config=to_dict(cfg), data_config={}, image_size=image_size,
                                norm=(model.backbone.mean, model.backbone.std), frame="planar",
                                region_names=["a", "b", "c"], resume=resume), out / "region_last.pt")


def test_resume_refuses_a_run_started_with_other_settings(small_prep, tmp_path):
    _write_last(tmp_path, image_size=64, resume={"epoch": 0})
    cfg = TrainConfig(epochs=1, device="cpu")
    with pytest.raises(CheckpointError, match=r"cannot resume: .*image_size 64 -> 32"):
        train_region(small_prep, ModelConfig(backbone="resnet18", pretrained=False), cfg, tmp_path, resume=True)
    with pytest.raises(CheckpointError, match=r"backbone 'resnet18' -> 'resnet34'"):
        train_region(small_prep, ModelConfig(backbone="resnet34", pretrained=False), cfg, tmp_path, resume=True)


def test_resume_refuses_a_checkpoint_without_training_state(small_prep, tmp_path):
    _write_last(tmp_path, resume=None)
    with pytest.raises(CheckpointError, match="no training state to resume from"):
        train_region(small_prep, ModelConfig(backbone="resnet18", pretrained=False), TrainConfig(device="cpu"),
                     tmp_path, resume=True)


def test_resume_of_a_damaged_last_checkpoint_names_it(small_prep, tmp_path, capsys):
    (tmp_path / "region_last.pt").write_bytes(b"PK\x03\x04 half a file")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'region_last.pt'}: not a readable checkpoint"):
        train_region(small_prep, ModelConfig(backbone="resnet18", pretrained=False), TrainConfig(device="cpu"),
                     tmp_path, resume=True)
