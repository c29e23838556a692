"""Scaling to large collections: the compact gallery (shortlist + product quantisation, memory-mapped),
the fusion weight chosen on validation, and builds that resume after a failure."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from geomodel.config import DataConfig, ModelConfig, TrainConfig, to_dict
from geomodel.data.transforms import build_transforms
from geomodel.engine.checkpoint import atomic_save, load_checkpoint, make_checkpoint
from geomodel.engine.features import FeatureCache, extract_features
from geomodel.engine.fusion import choose_weight, fusion_table, reported_weights
from geomodel.engine.gallery import build_gallery, gallery_transforms, open_gallery
from geomodel.errors import CheckpointError, GeomodelError
from geomodel.models import pq
from geomodel.models.backbones import build_backbone
from geomodel.models.coords import CoordRegressor
from geomodel.models.matching import LocalMatcher
from geomodel.models.region import RegionClassifier
from geomodel.predictor import Predictor
from geomodel.runtime import keep_freed_memory
from train.cli import main


def _maps(n: int, views: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, views, 16, 3, 3, generator=g), torch.randn(n, views, 24, 2, 2, generator=g)]


def _compact(tmp_path: Path, n: int = 40, per_region: int = 2,
             code_bytes: int = 4) -> tuple[LocalMatcher, list[torch.Tensor], torch.Tensor]:
    """A matcher with a compact gallery of `n` random photos whose codes are a memory-mapped .npy."""
    maps, feats = _maps(n), torch.randn(n, 32, generator=torch.Generator().manual_seed(1))
    matcher = LocalMatcher(2, num_regions=5, dim=8, per_region=per_region, code_bytes=code_bytes, global_dim=8)
    matcher.fit_whitening([m[:, 0] for m in maps])
    encoded = matcher.encode(maps)
    matcher.fit_codebooks(encoded)
    matcher.fit_global(feats)
    np.save(tmp_path / "codes.npy", matcher.quantise(encoded).numpy())
    codes = np.load(tmp_path / "codes.npy", mmap_mode="r", allow_pickle=False)
    matcher.attach_codes(codes, matcher.describe(feats), torch.arange(n) % 4)
    return matcher, maps, feats


def test_product_quantisation_keeps_descriptors_close() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=-1)
    x = torch.nn.functional.normalize(centres.repeat(300, 1) + 0.05 * torch.randn(1800, 16, generator=g), dim=-1)
    codebook = pq.train_codebook(x, 4)
    assert codebook.shape == (4, 256, 4)
    codes = pq.encode(x, codebook)
    assert codes.shape == (1800, 4) and codes.dtype == torch.uint8  # 16 numbers -> 4 bytes
    decoded = pq.decode(codes, codebook)
    assert (decoded * x).sum(-1).mean() > 0.97  # cosine with the original
    assert torch.allclose(decoded.norm(dim=-1), torch.ones(1800))
    few = pq.train_codebook(x[:20], 4)  # fewer vectors than 256 centroids: a smaller codebook, no error
    assert few.shape[1] <= 16


def test_compact_gallery_with_a_full_shortlist_equals_matching_every_decoded_photo(tmp_path) -> None:
    matcher, maps, feats = _compact(tmp_path, per_region=1000)
    assert matcher.compact and matcher.ready and isinstance(matcher.codes, np.memmap)
    queries, qfeats = [m[:5, 1] + 0.2 for m in maps], feats[:5] + 0.1
    compact = matcher.region_scores(queries, qfeats)
    # the same photos, decoded and matched exhaustively by the in-memory gallery
    reference = LocalMatcher(2, num_regions=5, dim=8)
    reference.load_state_dict({k: v for k, v in matcher.state_dict().items()
                               if k.startswith(("mean_", "proj_"))}, strict=False)
    codes = torch.from_numpy(np.array(matcher.codes))
    decoded = [pq.decode(codes[:, :, :9], matcher.codebook_0), pq.decode(codes[:, :, 9:], matcher.codebook_1)]
    reference.set_gallery([d.half() for d in decoded], matcher.regions)
    assert torch.allclose(compact, reference.region_scores(queries), atol=2e-3)
    assert (compact[:, 4] == -1).all()  # region 5 has no photo


def test_a_float16_gallery_file_with_a_full_shortlist_equals_exact_matching(tmp_path) -> None:
    matcher, maps, feats = _compact(tmp_path, per_region=1000, code_bytes=0)
    assert matcher.codes.dtype == np.float16 and matcher.codes.shape == (40, 2, 9 + 4, 8)
    assert matcher.codebook_0.numel() == 0  # nothing quantised, no codebooks
    queries, qfeats = [m[:5, 1] + 0.2 for m in maps], feats[:5] + 0.1
    exact = LocalMatcher(2, num_regions=5, dim=8)
    exact.load_state_dict({k: v for k, v in matcher.state_dict().items() if k.startswith(("mean_", "proj_"))},
                          strict=False)
    exact.set_gallery(exact.encode(maps), matcher.regions)  # every photo, in memory
    assert torch.allclose(matcher.region_scores(queries, qfeats), exact.region_scores(queries), atol=1e-6)


def test_the_shortlist_holds_each_regions_most_similar_photos_and_only_they_are_matched(tmp_path) -> None:
    matcher, maps, feats = _compact(tmp_path, per_region=3)  # 40 photos in regions 0-3 (10 each), region 4 empty
    ids = matcher.shortlist_ids(feats[:6])
    assert ids.shape == (6, 12)  # 3 in each of the 4 regions that have photos
    sims = matcher.describe(feats[:6]) @ matcher.global_desc.float().T
    for q in range(6):
        assert q in ids[q].tolist()  # each photo's own entry is its region's most similar
        for r in range(4):
            members = (matcher.regions == r).nonzero().squeeze(1)
            expected = members[sims[q, members].topk(3).indices]
            assert set(ids[q][matcher.regions[ids[q]] == r].tolist()) == set(expected.tolist())
    scores = matcher.region_scores([m[:6, 0] for m in maps], feats[:6])
    assert (scores[:, :4] > -1).all() and (scores[:, 4] == -1).all()  # every region with photos is scored
    assert torch.equal(scores.argmax(1), matcher.regions[:6])  # a gallery photo finds its own region
    # only the shortlisted photos count: a photo left out of every shortlist changes nothing
    outsider = next(i for i in range(40) if i not in ids.unique().tolist())
    matcher.codes = np.array(matcher.codes)
    matcher.codes[outsider] = 0
    assert torch.equal(matcher.region_scores([m[:6, 0] for m in maps], feats[:6]), scores)


def test_regions_with_fewer_photos_than_the_shortlist_give_all_they_have(tmp_path) -> None:
    matcher, maps, feats = _compact(tmp_path, n=40, per_region=2)
    regions = torch.tensor([0] * 30 + [1] * 9 + [3])  # region 3 has one photo, regions 2 and 4 none
    matcher.attach_codes(matcher.codes, matcher.global_desc, regions)
    ids = matcher.shortlist_ids(feats[:3])
    assert ids.shape == (3, 5) and (regions[ids] == torch.tensor([0, 0, 1, 1, 3])).all()
    assert (ids[:, -1] == 39).all()

def test_gallery_of_another_image_size_is_refused(tmp_path) -> None:
    matcher, maps, feats = _compact(tmp_path)
    with pytest.raises(ValueError, match="another image size"):
        matcher.region_scores([torch.randn(1, 16, 4, 4), torch.randn(1, 24, 2, 2)], feats[:1])


def test_weight_choice_takes_the_most_accurate_then_the_lowest_log_loss_and_reports_the_head_alone() -> None:
    row = lambda w, acc, loss: {"weight": w, "accuracy": acc, "log_loss": loss}  # noqa: E731
    assert choose_weight([row(0, .5, 1.0), row(.3, .4, .9), row(.7, .4, .8)])["weight"] == 0  # the head alone wins
    assert choose_weight([row(0, .5, .7), row(.3, .6, .9), row(.7, .5, .6)])["weight"] == .3  # accuracy first
    assert choose_weight([row(0, .5, 1.0), row(.3, .5, .9), row(.7, .4, .8)])["weight"] == .3  # a tie with the head
    assert choose_weight([row(0, .5, 1.0), row(.3, .5, .8), row(.7, .5, .8)])["weight"] == .3  # a full tie: smaller
    assert choose_weight([row(.7, .2, 3.0)])["weight"] == .7  # one weight given: kept
    assert reported_weights([.7, .3]) == [0, .3, .7] and reported_weights([0]) == [0]
    head = torch.tensor([[.6, .4], [.6, .4], [.2, .8]])
    matching = torch.tensor([[1., 0.], [0., 1.], [0., 1.]])
    table = fusion_table(head, matching, torch.tensor([0, 1, 1]), [0, .5, 1])
    assert [r["accuracy"] for r in table] == pytest.approx([2 / 3, 1.0, 1.0])
    assert table[0]["log_loss"] == pytest.approx(-np.log([.6, .4, .8]).mean())
    assert table[1]["log_loss"] == pytest.approx(-np.log([.8, .7, .9]).mean())
    assert choose_weight(table)["weight"] == 1  # as accurate as 0.5, at a lower log loss


def test_resuming_a_finished_region_stage_keeps_its_gallery(synthetic_dataset, tmp_path, capsys) -> None:
    csv, images = synthetic_dataset
    out = tmp_path / "m"
    argv = ["region", "--csv", str(csv), "--images", str(images), "--out", str(out), "--epochs", "1",
            "--backbone", "efficientnet_lite0", "--pretrained", "none", "--freeze-backbone", "--feature-layers",
            "14,head", "--match-layers", "14,head", "--image-size", "32", "--match-weight", "0.5", "--device", "cpu"]
    assert main(argv) == 0
    gallery = out / "region_gallery.npy"
    before = (gallery.stat().st_mtime_ns, (out / "region.pt").read_bytes())
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0  # e.g. after a kill in stage 2: nothing of stage 1 is redone
    assert "local matching: kept from the interrupted run (weight 0.5)" in capsys.readouterr().out
    assert (gallery.stat().st_mtime_ns, (out / "region.pt").read_bytes()) == before
    metrics = json.loads((out / "region_metrics.json").read_text())
    assert metrics["match_weight"] == 0.5 and metrics["gallery_size"] == 56
    assert [r["weight"] for r in metrics["fusion"]] == [0, 0.5]  # the head alone is reported too


def test_fit_with_weight_zero_builds_and_stores_no_gallery(synthetic_dataset, tmp_path, capsys, monkeypatch) -> None:
    from geomodel.engine import stages

    def no_gallery(*args, **kwargs):
        raise AssertionError("a gallery was built although --match-weight 0 turns matching off")

    monkeypatch.setattr(stages, "build_gallery", no_gallery)
    csv, images = synthetic_dataset
    out = tmp_path / "m"
    (out).mkdir()
    (out / "region_gallery.npy").write_bytes(b"an earlier run's gallery")
    assert main(["fit", "--csv", str(csv), "--images", str(images), "--out", str(out), "--epochs", "1",
                 "--coords-epochs", "1", "--backbone", "efficientnet_lite0", "--pretrained", "none",
                 "--freeze-backbone", "--feature-layers", "14,head", "--match-layers", "14,head", "--image-size", "32",
                 "--match-weight", "0", "--device", "cpu"]) == 0
    log = capsys.readouterr().out
    assert "off (--match-weight 0): no gallery built" in log
    metrics = json.loads((out / "region_metrics.json").read_text())
    assert metrics["match_weight"] == 0 and metrics["gallery_size"] == 0
    assert metrics["val_accuracy"] == metrics["val_head_accuracy"]
    ckpt = load_checkpoint(out / "region.pt")
    assert "gallery" not in ckpt and ckpt["state_dict"]["matcher.regions"].numel() == 0
    assert not list(out.glob("region_gallery*"))  # nor any stale one
    predictor = Predictor.from_dir(out, device="cpu")
    assert not predictor.region_model.matching
    assert predictor.predict(sorted(images.iterdir())[:2])[0]["error"] is None


def _region_model(image_size: int = 32, code_bytes: int = 8) -> RegionClassifier:
    torch.manual_seed(0)
    cfg = ModelConfig(kind="region", backbone="efficientnet_lite0", pretrained=False, num_regions=3, pool="gem",
                      feature_layers=["14", "head"], match_layers=["14", "head"], match_code_bytes=code_bytes)
    return RegionClassifier(cfg, image_size=image_size).eval()


def _count_passes(model: RegionClassifier) -> list[int]:
    seen = [0]
    model.backbone.trunk.register_forward_hook(lambda _m, args, _out: seen.__setitem__(0, seen[0] + len(args[0])))
    return seen


@pytest.mark.parametrize("code_bytes", [8, 0])  # product-quantised codes, float16 descriptors
def test_gallery_build_resumes_after_a_failure_without_redoing_finished_chunks(synthetic_dataset, tmp_path,
                                                                                code_bytes) -> None:
    csv, images = synthetic_dataset
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    df = pd.read_csv(csv).head(30)
    paths = [folder / f for f in df["filename"]]
    regions = torch.tensor(df["Region_ID"].to_numpy() - 1)
    model = _region_model(code_bytes=code_bytes)
    views = gallery_transforms(model, 32)
    run = dict(device=torch.device("cpu"), batch_size=4, chunk=8, fit_photos=24, log=lambda *_: None)
    reference = build_gallery(model, paths, regions, views, partial=tmp_path / "ref.partial", **run)
    assert reference.codes.dtype == (np.uint8 if code_bytes else np.float16)

    good = paths[26].read_bytes()
    paths[26].write_bytes(good[: len(good) // 3])  # photo 27 breaks the fourth chunk (after the fit's 24)
    with pytest.raises(GeomodelError):
        build_gallery(model, paths, regions, views, partial=tmp_path / "g.partial", **run)
    paths[26].write_bytes(good)
    passes = _count_passes(model)
    resumed = build_gallery(model, paths, regions, views, partial=tmp_path / "g.partial", resume=True, **run)
    assert passes[0] == (30 - 24) * 4 + 1  # the three finished chunks were kept, no refit (+1 blank probe)
    assert np.array_equal(np.asarray(resumed.codes), np.asarray(reference.codes))
    assert torch.equal(resumed.global_desc, reference.global_desc)
    passes[0] = 0
    build_gallery(model, paths, regions, views, partial=tmp_path / "g.partial", **run)  # no resume: from scratch
    assert passes[0] == 30 * 4 + 24 + 1  # every photo's 4 views, the fit's 24 plain views, the probe


def test_feature_extraction_resumes_after_a_failure(synthetic_dataset, tmp_path) -> None:
    csv, images = synthetic_dataset
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    paths = [folder / f for f in pd.read_csv(csv)["filename"][:10]]
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", pretrained=False, image_size=32)
    seen = [0]
    backbone.register_forward_hook(lambda _m, args, _out: seen.__setitem__(0, seen[0] + len(args[0])))
    cache = FeatureCache(tmp_path / "cache")
    run = dict(device=torch.device("cpu"), batch_size=2, cache=cache, image_size=32, chunk=4)
    tf = build_transforms((backbone.mean, backbone.std), 32, train=False)
    good = paths[9].read_bytes()
    paths[9].write_bytes(b"")  # the third chunk fails
    with pytest.raises(GeomodelError):
        extract_features(backbone, paths, tf, **run)
    assert len(list((cache.dir).rglob("*.pt"))) == 2  # two chunks of 4 photos were stored as they finished
    paths[9].write_bytes(good)
    seen[0] = 0
    feats = extract_features(backbone, paths, tf, **run)
    assert seen[0] == 2 and feats.shape[0] == 10  # only the unfinished chunk's photos ran again


def test_old_model_with_the_gallery_inside_region_pt_still_loads(tmp_path) -> None:
    model = _region_model()
    with torch.no_grad():
        _, maps = model.forward_features_and_maps(torch.randn(6, 3, 32, 32))
    model.matcher.fit([torch.stack([m, m.flip(-1)], 1) for m in maps], torch.tensor([0, 1, 2, 0, 1, 2]))
    names = ["a", "b", "c"]
    common = dict(data_config=to_dict(DataConfig(image_size=32)), image_size=32, frame="planar", region_names=names)
    state = make_checkpoint(model, kind="region", model_config=to_dict(model.cfg),
                            norm=(model.backbone.mean, model.backbone.std), **common)
    for key in [k for k in state["state_dict"] if k.startswith(("matcher.codebook", "matcher.global"))]:
        del state["state_dict"][key]  # what a model directory written before the compact gallery holds
    atomic_save(state, tmp_path / "region.pt")
    ccfg = ModelConfig(kind="coords", backbone="efficientnet_lite0", pretrained=False, num_regions=3)
    coords = CoordRegressor(ccfg, feature_dim=model.feature_dim, image_size=32)
    ckpt = make_checkpoint(coords, kind="coords", model_config=to_dict(ccfg), norm=(model.backbone.mean,
                           model.backbone.std), coord_stats={"mean": [0.0, 0.0], "std": [1.0, 1.0]}, **common)
    atomic_save({**ckpt, "feature_dim": coords.feature_dim}, tmp_path / "coords.pt")
    predictor = Predictor.from_dir(tmp_path, device="cpu")
    matcher = predictor.region_model.matcher
    assert matcher.ready and not matcher.compact and predictor.region_model.matching  # matched exhaustively
    image = torch.rand(32, 32, 3).mul(255).byte().numpy()
    from PIL import Image

    assert predictor.predict([Image.fromarray(image)])[0]["error"] is None


def test_a_gallery_file_from_another_run_is_refused(synthetic_dataset, tmp_path) -> None:
    csv, images = synthetic_dataset
    df = pd.read_csv(csv).head(12)
    model = _region_model()
    run = dict(device=torch.device("cpu"), batch_size=4, log=lambda *_: None)
    regions = torch.tensor(df["Region_ID"].to_numpy() - 1)
    built = build_gallery(model, [images / f for f in df["filename"]], regions, gallery_transforms(model, 32),
                          partial=tmp_path / "a.partial", **run)
    meta = built.publish(tmp_path / "region_gallery.npy")
    ckpt = {"gallery": meta}
    fresh = _region_model()
    fresh.matcher.load_state_dict(model.matcher.state_dict(), strict=False)
    fresh.matcher.global_desc, fresh.matcher.regions = built.global_desc, regions
    open_gallery(fresh, ckpt, tmp_path)
    assert fresh.matcher.compact and len(fresh.matcher.codes) == 12
    other = build_gallery(model, [images / f for f in df["filename"][::-1]], regions.flip(0),
                          gallery_transforms(model, 32), partial=tmp_path / "b.partial", **run)
    other.publish(tmp_path / "region_gallery.npy")  # another run's gallery in its place
    with pytest.raises(CheckpointError, match="does not belong"):
        open_gallery(_region_model(), ckpt, tmp_path)
    (tmp_path / "region_gallery.npy").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        open_gallery(_region_model(), ckpt, tmp_path)


def test_allocator_setting_applies_on_linux() -> None:
    import sys

    assert keep_freed_memory() is sys.platform.startswith("linux")
    TrainConfig(match_weights=[0, 0.5])
    with pytest.raises(ValueError, match="match weights"):
        TrainConfig(match_weights=[1.5])


def test_match_weight_flag_takes_auto_one_weight_or_weights_to_choose_from() -> None:
    from geomodel.config import MATCH_WEIGHTS
    from train.cli import _configs, get_args_parser

    base = ["fit", "--csv", "labels.csv", "--images", ".", "--out", "model", "--feature-layers", "14,head",
            "--match-layers", "14,head"]
    for flag, weights, fixed in (("auto", list(MATCH_WEIGHTS), 0.7), ("0.5", [0.5], 0.5),
                                 ("0.1,0.3", [0.1, 0.3], 0.7)):
        _, (region, train), _ = _configs(get_args_parser().parse_args([*base, "--match-weight", flag]))
        assert train.match_weights == weights and region.match_weight == fixed
    with pytest.raises(ValueError, match="--match-weight must be 'auto' or numbers"):
        _configs(get_args_parser().parse_args([*base, "--match-weight", "0.1,high"]))
    with pytest.raises(ValueError, match="match weights must be in"):
        _configs(get_args_parser().parse_args([*base, "--match-weight", "0.5,1.5"]))
