"""Training under torchrun: two CPU ranks (gloo) on a tiny synthetic set.

* `python -m torch.distributed.run --nproc_per_node=2 -m train fit ...`: the unchanged CLI
  (frozen trunk, feature cache, one augmented view) writes one checkpoint set, logs once.
* This file as the per-rank worker (`__main__` below): each rank trains stage 1 frozen and
  fine-tuned and stage 2 in the separate layout through the library, checks that the
  replica-divergence guard fires when one rank's weights are changed, and writes what it
  saw to rank<N>.json for the test to compare.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--backbone", "resnet18", "--pretrained", "none", "--image-size", "32", "--epochs", "2",
          "--batch-size", "8", "--device", "cpu", "--seed", "0"]


def _torchrun(args: list[str], tmp_path: Path) -> str:
    env = {**os.environ, "GEOMODEL_CACHE": str(tmp_path / "env-cache"), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    # Own process group: on a hang, the ranks are killed with their launcher, never left behind.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in 600 s:\n{output[-6000:]}")
    assert proc.returncode == 0, output[-6000:]
    return output


@pytest.mark.slow
def test_train_cli_under_torchrun_writes_one_checkpoint_set(synthetic_dataset, tmp_path):
    csv, images = synthetic_dataset
    out = tmp_path / "model"
    output = _torchrun(["-m", "train", "fit", "--csv", str(csv), "--images", str(images), "--out", str(out),
                        "--freeze-backbone", "--aug-views", "1", "--cache-dir", str(tmp_path / "cache"), *COMMON],
                       tmp_path)
    # One checkpoint set, written by rank 0 only: no per-rank copies, no torn temporary files.
    assert sorted(p.name for p in out.glob("*.pt")) == ["coords.pt", "coords_last.pt", "region.pt",
                                                         "region_last.pt"]
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))
    for name in ("region_history.csv", "coords_history.csv", "region_metrics.json", "coords_metrics.json"):
        assert (out / name).is_file(), name
    assert len((out / "region_history.csv").read_text().splitlines()) == 1 + 2  # header + one row per epoch
    assert output.count("[region] epoch 1/2") == 1 and output.count("model written to") == 1, "only rank 0 logs"
    metrics = json.loads((out / "region_metrics.json").read_text())
    from geomodel.config import DataConfig
    from geomodel.engine.stages import prepare_data

    prep = prepare_data(csv, images, data_cfg=DataConfig(image_size=32), seed=0, check=False)
    assert metrics["val_size"] == len(prep.val)  # scored on the whole validation set, not one rank's share
    # Each rank extracted half of each set of photos and received the other half; one writer stored them.
    import torch

    keys = {p.name.rsplit("-", 1)[1]: p for p in (tmp_path / "cache").iterdir() if p.is_dir()}
    assert sorted(keys) == ["aug0", "eval"]  # eval view + one augmented view
    chunks = {k: [torch.load(c, weights_only=True)["digests"] for c in d.glob("*.pt")] for k, d in keys.items()}
    assert len(chunks["aug0"]) == 2 and len(chunks["eval"]) == 4  # (training set, validation set) x 2 ranks
    assert sum(map(len, chunks["aug0"])) == len(prep.train)
    assert sum(map(len, chunks["eval"])) == len(prep.train) + len(prep.val)
    assert not (tmp_path / "env-cache").exists()

    from geomodel.predictor import Predictor

    preds = Predictor.from_dir(out, device="cpu").predict(sorted(images.iterdir())[:3])
    assert all(p["error"] is None for p in preds)


@pytest.mark.slow
def test_ranks_agree_and_stay_in_sync(synthetic_dataset, tmp_path):
    csv, images = synthetic_dataset
    _torchrun([str(Path(__file__)), str(csv), str(images), str(tmp_path)], tmp_path)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1] and all(r["world_size"] == 2 for r in reports)
    # Both ranks hold the same metrics (the same early-stopping decisions) for every stage; training
    # ending without the divergence guard firing means their weights were identical too.
    for key in ("frozen_region", "finetune_region", "separate_coords"):
        assert reports[0][key] == reports[1][key], key
        assert reports[0][key]["val_size"] > 0
    assert all(r["guard_raised"] for r in reports), "changed weights on one rank went unnoticed"
    for name in ("frozen", "finetune"):
        assert not list((tmp_path / name).glob("*rank*")) and (tmp_path / name / "region.pt").is_file()
    # The gallery both ranks built (each its share of every chunk) is the one a single process builds.
    assert reports[0]["matching_region"]["gallery_size"] == len(prep_of(csv, images).train) + len(
        prep_of(csv, images).val)
    import numpy as np
    import torch

    from geomodel.engine.gallery import build_gallery, gallery_transforms
    from geomodel.engine.stages import _paths, load_region_model

    torch.set_num_threads(1)  # as the ranks ran (OMP_NUM_THREADS=1): the same arithmetic
    prep = prep_of(csv, images)
    model, _ = load_region_model(tmp_path / "matching", torch.device("cpu"))
    regions = torch.tensor(np.concatenate([prep.train["region"], prep.val["region"]]))
    single = build_gallery(model, _paths(prep.train, images) + _paths(prep.val, images), regions,
                           gallery_transforms(model, 32), partial=tmp_path / "single.partial",
                           device=torch.device("cpu"), batch_size=8, fit_photos=len(prep.train), log=lambda *_: None)
    ranks = np.load(tmp_path / "matching" / "region_gallery.npy")
    assert np.array_equal(np.asarray(single.codes), ranks)


def prep_of(csv: Path, images: Path):
    from geomodel.config import DataConfig
    from geomodel.engine.stages import prepare_data

    return prepare_data(csv, images, data_cfg=DataConfig(image_size=32), seed=0)


def _worker(csv: str, images: str, root: str) -> None:
    """One torchrun rank: see the module docstring."""
    sys.path.insert(0, str(ROOT))
    import torch

    from geomodel.config import DataConfig, ModelConfig, TrainConfig
    from geomodel.engine import distributed as dist
    from geomodel.engine.stages import prepare_data, train_coords, train_region

    root_dir = Path(root)
    rank = int(os.environ["RANK"])
    quiet = lambda *_: None  # noqa: E731
    with dist.maybe_init_process_group("cpu"):
        report: dict = {"rank": rank, "world_size": dist.world_size()}
        prep = prepare_data(csv, images, data_cfg=DataConfig(image_size=32), seed=0)
        train = dict(epochs=2, batch_size=8, device="cpu", seed=0)
        report["frozen_region"] = train_region(
            prep, ModelConfig(kind="region", backbone="resnet18", pretrained=False),
            TrainConfig(freeze_backbone=True, cache_dir=str(root_dir / "cache"), **train),
            root_dir / "frozen", log=quiet)
        report["matching_region"] = train_region(  # the gallery is built by both ranks, written by rank 0
            prep, ModelConfig(kind="region", backbone="efficientnet_lite0", pretrained=False,
                              feature_layers=["14", "head"], match_layers=["14", "head"]),
            TrainConfig(freeze_backbone=True, cache_dir=str(root_dir / "cache"), match_weights=[0.5], **train),
            root_dir / "matching", log=quiet)
        report["finetune_region"] = train_region(
            prep, ModelConfig(kind="region", backbone="resnet18", pretrained=False), TrainConfig(**train),
            root_dir / "finetune", log=quiet)
        report["separate_coords"] = train_coords(
            prep, ModelConfig(kind="coords", backbone="resnet18", pretrained=False, layout="separate"),
            TrainConfig(region_input="true", **train), root_dir / "finetune", log=quiet)
        model = torch.nn.Linear(3, 2)
        torch.nn.init.constant_(model.weight, 1.0 + rank)  # rank 1 differs
        try:
            dist.check_replicas_agree(model)
            report["guard_raised"] = False
        except RuntimeError:
            report["guard_raised"] = True
    (root_dir / f"rank{rank}.json").write_text(json.dumps(report, default=str))


if __name__ == "__main__":
    _worker(*sys.argv[1:4])
