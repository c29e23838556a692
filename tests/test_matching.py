"""Local-descriptor matching (stage 1's gallery of training photos): unit behaviour and the trained path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geomodel.config import ModelConfig
from geomodel.engine.checkpoint import load_checkpoint
from geomodel.models import model_from_checkpoint
from geomodel.models.matching import LocalMatcher
from geomodel.models.region import RegionClassifier
from geomodel.predictor import Predictor
from train.cli import main


def _maps(n: int, views: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, views, 16, 3, 3, generator=g), torch.randn(n, views, 24, 2, 2, generator=g)]


def test_a_photo_in_the_gallery_is_matched_to_its_own_region() -> None:
    maps = _maps(12)
    regions = torch.arange(12) % 4
    matcher = LocalMatcher(2, num_regions=5, dim=8)
    assert not matcher.ready
    matcher.fit(maps, regions)
    assert matcher.ready and matcher.gallery_0.shape == (12, 2, 9, 8) and matcher.gallery_0.dtype == torch.float16
    probs = matcher([m[:, 0] for m in maps])  # the gallery's own plain views as queries
    assert probs.shape == (12, 5) and torch.allclose(probs.sum(1), torch.ones(12))
    assert torch.equal(probs.argmax(1), regions)
    assert (probs[:, 4] < 1e-6).all()  # region 5 has no photo in the gallery
    # the mirrored view is in the gallery too: a mirrored query still finds its photo
    sims = matcher.similarities([m[:, 1] for m in maps])
    assert torch.equal(sims.argmax(1), torch.arange(12))


def test_region_mode_assembles_a_view_from_several_photos() -> None:
    """A query made of the left half of one region-0 photo and the right half of another matches region 0
    fully in region mode; in photo mode each photo explains only half of it, and a decoy photo that is
    a noisy copy of the whole query wins."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 8, 2, 2, generator=g)
    query = torch.cat([a[..., :1], b[..., 1:]], dim=-1)  # (8, 2, 2): left of a, right of b
    decoy = query + 0.6 * torch.randn(8, 2, 2, generator=g)
    others = torch.randn(5, 8, 2, 2, generator=g)
    gallery = torch.stack([a, b, decoy, *others])[:, None]  # (N, V=1, C, h, w)
    regions = torch.tensor([0, 0, 1, 2, 2, 2, 2, 2])
    scores = {}
    for mode in ("region", "photo"):
        matcher = LocalMatcher(1, num_regions=3, dim=8, mode=mode)
        matcher.fit([gallery], regions)
        scores[mode] = matcher.region_scores([query[None]])[0]
    assert scores["region"].argmax() == 0 and torch.isclose(scores["region"][0], torch.tensor(1.0), atol=1e-4)
    assert scores["photo"].argmax() == 1


def test_gallery_in_chunks_equals_gallery_at_once() -> None:
    maps = _maps(10)
    matcher = LocalMatcher(2, num_regions=3, dim=8)
    matcher.fit(maps, torch.arange(10) % 3)
    query = [m[:3, 1] + 0.1 for m in maps]
    assert torch.allclose(matcher.similarities(query, chunk=3), matcher.similarities(query, chunk=64))


def test_match_layers_must_be_feature_layers() -> None:
    with pytest.raises(ValueError, match="not among feature_layers"):
        ModelConfig(feature_layers=["14", "head"], match_layers=["15"])
    with pytest.raises(ValueError, match="match_weight"):
        ModelConfig(feature_layers=["head"], match_layers=["head"], match_weight=1.5)


def test_region_model_fuses_head_and_matching_and_round_trips() -> None:
    cfg = ModelConfig(backbone="efficientnet_lite0", pretrained=False, num_regions=3, pool="gem",
                      feature_layers=["14", "head"], match_layers=["14", "head"], match_weight=0.5)
    model = RegionClassifier(cfg, image_size=64).eval()
    x = torch.randn(6, 3, 64, 64)
    with torch.no_grad():
        feats, maps = model.forward_features_and_maps(x)
        assert torch.allclose(feats, model.forward_features(x))
        assert [m.shape[1] for m in maps] == [192, 1280]
        head_only = model.probabilities(feats, maps)  # no gallery yet: the head alone
        assert torch.allclose(head_only, model(x).softmax(1))
        model.matcher.fit([torch.stack([m, m.flip(-1)], 1) for m in maps], torch.tensor([0, 1, 2, 0, 1, 2]))
        fused = model.probabilities(feats, maps)
    expected = 0.5 * head_only + 0.5 * model.matcher(maps)
    assert torch.allclose(fused, expected) and not torch.allclose(fused, head_only)

    ckpt = {"format": "geomodel-checkpoint", "format_version": 1, "kind": "region", "image_size": 64,
            "model_config": {**cfg.__dict__}, "state_dict": model.state_dict(), "backbone_weights": "stored"}
    reloaded = model_from_checkpoint(ckpt)
    with torch.no_grad():
        assert torch.equal(reloaded.probabilities(*reloaded.forward_features_and_maps(x)), fused)


def test_matching_needs_convolutional_maps() -> None:
    cfg = ModelConfig(backbone="vit_b_16", pretrained=False, num_regions=3, match_layers=["head"])
    model = RegionClassifier(cfg, image_size=32).eval()
    with pytest.raises(ValueError, match="convolutional feature maps"):
        model.forward_features_and_maps(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("code_bytes", [16, 0])  # product-quantised, or the float16 descriptors themselves
def test_fit_with_matching_stores_a_gallery_the_predictor_uses(synthetic_dataset, tmp_path: Path, capsys,
                                                               code_bytes) -> None:
    csv, images = synthetic_dataset
    out = tmp_path / "m"
    assert main(["fit", "--csv", str(csv), "--images", str(images), "--out", str(out), "--epochs", "2",
                 "--backbone", "efficientnet_lite0", "--pretrained", "none", "--freeze-backbone",
                 "--feature-layers", "14,head", "--match-layers", "14,head", "--image-size", "64",
                 "--match-weight", "0.5", "--match-code-bytes", str(code_bytes), "--device", "cpu"]) == 0
    assert "local matching: validation accuracy" in capsys.readouterr().out
    ckpt = load_checkpoint(out / "region.pt")
    sizes = json.loads((out / "region_metrics.json").read_text())
    n = sizes["train_size"] + sizes["val_size"]  # every labelled photo: training and validation
    assert ckpt["metrics"]["gallery_size"] == n == sizes["gallery_size"]
    assert ckpt["model_config"]["match_weight"] == 0.5 == sizes["match_weight"]  # one weight given: kept
    assert [r["weight"] for r in sizes["fusion"]] == [0, 0.5]  # the head alone is reported beside it
    assert {"accuracy", "head_accuracy"} <= set(ckpt["metrics"])
    # the local descriptors live in their own memory-mapped file: (photos, views, positions, bytes)
    codes = np.load(out / "region_gallery.npy", mmap_mode="r", allow_pickle=False)
    assert codes.shape == (n, 4, 2 * 2 + 2 * 2, code_bytes or 64)  # plain, zoomed, their mirrors
    assert codes.dtype == (np.uint8 if code_bytes else np.float16)
    assert ckpt["gallery"]["shape"] == list(codes.shape) and ckpt["state_dict"]["matcher.gallery_0"].numel() == 0
    assert ckpt["state_dict"]["matcher.global_desc"].shape[0] == n
    assert not list(out.glob("*.partial*"))  # the build's working files are gone

    predictor = Predictor.from_dir(out, device="cpu")
    assert predictor.region_model.matcher.ready and predictor.region_model.matcher.compact
    assert isinstance(predictor.region_model.matcher.codes, np.memmap)  # mapped at load, not read into memory
    assert "state_dict" not in predictor.region_ckpt  # the weights live in the models only
    labels = pd.read_csv(csv).head(4)
    photos = [images / f for f in labels["filename"]]
    probs, _ = predictor.predict_tensors([Image.open(p).convert("RGB") for p in photos])
    x = torch.stack([predictor._tf_region(Image.open(p).convert("RGB")) for p in photos])
    with torch.inference_mode():
        head = predictor.region_model(x).softmax(1)
    assert not torch.allclose(probs, head)  # the gallery changed the probabilities
    # a gallery photo is its own best match, so its own label wins
    results = predictor.predict(photos)
    assert [r["region_id"] for r in results] == labels["Region_ID"].tolist()
