"""The learning curve (`python -m train learning-curve`): leave-one-out matching for growing galleries."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geomodel.charts import learning_curve_figure
from geomodel.engine.learning_curve import learning_curve, log2_fit, photos_needed
from geomodel.models.matching import LocalMatcher
from train.cli import main


def _region_maps(per_region: int = 12, regions: int = 4, noise: float = 1.5, seed: int = 0):
    """Descriptor maps where each region's photos share the region's pattern under heavy noise."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.randn(regions, 16, 3, 3, generator=g)
    labels = torch.arange(regions).repeat_interleave(per_region)
    plain = pattern[labels] + noise * torch.randn(len(labels), 16, 3, 3, generator=g)
    return [torch.stack([plain, plain.flip(-1)], dim=1)], labels  # views: plain, mirrored


def test_a_match_set_to_minus_one_leaves_that_photo_out() -> None:
    maps, labels = _region_maps(per_region=1, regions=4, noise=0.0)
    matcher = LocalMatcher(1, num_regions=4, dim=8)
    matcher.fit(maps, labels)
    matches = matcher.descriptor_matches([maps[0][:, 0]])  # each photo against the 4-photo gallery
    assert torch.equal(matcher.aggregate(matches).argmax(1), labels)  # each finds itself
    assert torch.equal(matcher.aggregate(matches), matcher.region_scores([maps[0][:, 0]]))
    own = torch.eye(4, dtype=torch.bool)[:, :, None]
    left_out = matcher.aggregate([m.masked_fill(own, -1.0) for m in matches])
    assert (left_out.gather(1, labels[:, None]) == -1).all()  # its region has no other photo
    assert (left_out.max(1).values > -1).all()  # the others still score


def test_accuracy_grows_with_the_gallery_and_is_reported_per_share() -> None:
    maps, labels = _region_maps()
    result = learning_curve(maps, labels, 4, fractions=(0.1, 1.0), repeats=3, dim=8, target=0.99,
                            progress=False)
    small, full = result["points"]
    assert (small["gallery_share"], small["draws"], full["draws"]) == (0.1, 3, 1)
    assert small["photos_per_region"] < full["photos_per_region"] == 11.0  # 12 photos, itself left out
    assert full["accuracy"] > small["accuracy"]
    assert full["top3_accuracy"] >= full["accuracy"]
    assert result["fit"]["slope_per_doubling"] > 0 and result["photos"] == result["queries"] == 48
    sampled = learning_curve(maps, labels, 4, fractions=(1.0,), dim=8, max_queries=20, progress=False)
    assert sampled["queries"] == 20 and sampled["photos"] == 48  # queries sampled, all photos in the gallery
    json.dumps(result)  # plain types only
    ax = learning_curve_figure(result).axes[0]
    measured = ax.containers[0].lines[0].get_xydata()  # the errorbar's points
    assert measured.tolist() == [[p["photos_per_region"], p["accuracy"]] for p in result["points"]]
    assert ax.get_xscale() == "log" and "48 photos, 4 regions" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "measured (leave-one-out)" in labels and "top-3" in labels and "target 99%" in labels
    assert any(label.startswith("fit: +") and label.endswith("per doubling") for label in labels)


def test_log2_fit_and_the_photos_a_target_needs() -> None:
    fit = log2_fit([2, 4, 8, 16], [0.2, 0.3, 0.4, 0.5])  # +10 points per doubling
    assert fit == pytest.approx((0.1, 0.1))
    assert photos_needed(fit, 0.7) == pytest.approx(64.0)
    assert photos_needed((0.5, 0.0), 0.7) is None  # a flat curve never gets there
    assert log2_fit([4, 4], [0.3, 0.4]) is None and photos_needed(None, 0.7) is None  # one gallery size: no line


def test_bad_gallery_shares_are_refused() -> None:
    maps, labels = _region_maps(per_region=2)
    with pytest.raises(ValueError, match="gallery shares"):
        learning_curve(maps, labels, 4, fractions=(0.0, 1.0))


@pytest.mark.slow
def test_cli_writes_the_curve_and_leaves_bad_photos_out(synthetic_dataset, tmp_path: Path, capsys) -> None:
    csv, images = synthetic_dataset
    folder = tmp_path / "images"
    folder.mkdir()
    df = pd.read_csv(csv).head(30)
    for name in df["filename"]:
        Image.open(images / name).save(folder / name)
    (folder / df["filename"][3]).write_bytes(b"not a photo")
    df.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "curve"
    assert main(["learning-curve", "--csv", str(tmp_path / "labels.csv"), "--images", str(folder), "--out", str(out),
                 "--pretrained", "none", "--image-size", "64", "--shares", "0.5,1", "--repeats", "2",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert "left out line 5: " in printed.err and f"{df['filename'][3]}: this is a text file" in printed.err
    assert "29 photos, 3 regions" in printed.out and "per doubling" in printed.out
    result = json.loads((out / "curve.json").read_text())
    assert [p["gallery_share"] for p in result["points"]] == [0.5, 1.0] and result["photos_left_out"] == 1
    assert Image.open(out / "curve.png").size == (640, 420)
    assert main(["learning-curve", "--csv", str(tmp_path / "labels.csv"), "--images", str(folder), "--out", str(out),
                 "--shares", "0,1"]) == 2
    assert "gallery shares must be in (0, 1]" in capsys.readouterr().err
    assert main(["learning-curve", "--csv", str(tmp_path / "labels.csv"), "--images", str(folder), "--out", str(out),
                 "--backbone", "resnet18", "--pretrained", "none"]) == 2
    assert "need an efficientnet_lite* backbone" in capsys.readouterr().err


@pytest.mark.slow
def test_real_campus_photos_match_well_above_chance(shared_data: Path, tmp_path: Path) -> None:
    """The offline Lite0 descriptors on the real campus: 53.5 % leave-one-out when measured (10 % chance)."""
    campus = shared_data / "campus"
    assert main(["learning-curve", "--csv", str(campus / "labels.csv"), "--images", str(campus / "images"),
                 "--out", str(tmp_path), "--shares", "1", "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "curve.json").read_text())
    point, = result["points"]
    assert result["fit"] is None and result["photos_per_region_for_target"] is None  # one share: no trend
    assert point["accuracy"] > 0.45 and point["top3_accuracy"] > 0.65
    counts = pd.read_csv(campus / "labels.csv")["Region_ID"].value_counts().to_numpy()
    assert np.isclose(point["photos_per_region"], (counts * (counts - 1)).sum() / counts.sum(), atol=0.01)
