"""`python -m train` under torchrun: two CPU ranks (gloo) on a tiny synthetic set.

The test launches this file as the per-rank worker (`__main__` below) with
`python -m torch.distributed.run --nproc_per_node=2`. Each rank:
  1. runs the unchanged CLI, `train fit`, frozen trunk + feature cache + one augmented view;
  2. trains stage 1 with the trunk fine-tuned and stage 2 in the separate layout through the library;
  3. checks that the replica-divergence guard fires when one rank's weights are changed;
and writes what it saw to rank<N>.json for the test to compare.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--backbone", "resnet18", "--pretrained", "none", "--image-size", "32", "--epochs", "2",
          "--batch-size", "8", "--device", "cpu", "--seed", "0"]


@pytest.mark.slow
def test_torchrun_two_cpu_ranks(synthetic_dataset, tmp_path):
    csv, images = synthetic_dataset
    env = {**os.environ, "GEOMODEL_CACHE": str(tmp_path / "env-cache"), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__)), str(csv), str(images), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1] and all(r["world_size"] == 2 for r in reports)
    assert all(r["cli_rc"] == 0 for r in reports)
    # Both ranks hold the same metrics (the same early-stopping decisions) for every stage.
    for key in ("frozen_region", "finetune_region", "separate_coords"):
        assert reports[0][key] == reports[1][key], key
    assert reports[0]["finetune_region"]["val_size"] == reports[0]["frozen_region"]["val_size"] > 0
    assert all(r["guard_raised"] for r in reports), "changed weights on one rank went unnoticed"

    # One checkpoint set, written by rank 0 only: no per-rank copies, no torn temporary files.
    out = tmp_path / "cli"
    assert sorted(p.name for p in out.glob("*.pt")) == ["coords.pt", "coords_last.pt", "region.pt",
                                                         "region_last.pt"]
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))
    for name in ("region_history.csv", "coords_history.csv", "region_metrics.json", "coords_metrics.json"):
        assert (out / name).is_file(), name
    assert len((out / "region_history.csv").read_text().splitlines()) == 1 + 2  # header + one row per epoch
    assert output.count("[region] epoch 1/2") == 1, "only rank 0 logs"
    metrics = json.loads((out / "region_metrics.json").read_text())
    assert metrics["val_size"] == reports[0]["frozen_region"]["val_size"]  # scored on the whole validation set
    # Rank 0 extracted the features once; the other rank read them from the same cache.
    cached = list((tmp_path / "cache").glob("*.pt"))
    assert len(cached) == 2  # eval view + one augmented view (train and val share each file)

    from geomodel.predictor import Predictor

    preds = Predictor.from_dir(out, device="cpu").predict(sorted(images.iterdir())[:3])
    assert all(p["error"] is None for p in preds)


def _worker(csv: str, images: str, root: str) -> None:
    """One torchrun rank: see the module docstring."""
    sys.path.insert(0, str(ROOT))
    import torch

    from geomodel.config import DataConfig, ModelConfig, TrainConfig
    from geomodel.engine import distributed as dist
    from geomodel.engine.stages import prepare_data, train_coords, train_region
    from train.cli import main

    root_dir = Path(root)
    rank = int(os.environ["RANK"])
    cli_rc = main(["fit", "--csv", csv, "--images", images, "--out", str(root_dir / "cli"), "--freeze-backbone",
                   "--aug-views", "1", "--cache-dir", str(root_dir / "cache"), *COMMON])
    report: dict = {"rank": rank, "cli_rc": cli_rc}
    quiet = lambda *_: None  # noqa: E731
    with dist.maybe_init_process_group("cpu"):
        report["world_size"] = dist.world_size()
        prep = prepare_data(csv, images, data_cfg=DataConfig(image_size=32), seed=0)
        train = dict(epochs=2, batch_size=8, device="cpu", seed=0)
        report["frozen_region"] = train_region(
            prep, ModelConfig(kind="region", backbone="resnet18", pretrained=False),
            TrainConfig(freeze_backbone=True, cache_dir=str(root_dir / "cache"), **train),
            root_dir / "frozen", log=quiet)
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
