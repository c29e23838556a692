"""Labels preprocessing: validation, split, percentile filter fitted on train only, exclusions, normalisation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geomodel.config import DataConfig
from geomodel.data.dataset import GeoDataset
from geomodel.data.labels import (CoordStats, apply_exclusions, drop_outliers, read_labels, region_centroids,
                                  stratified_split)
from geomodel.data.transforms import build_transforms
from geomodel.engine.stages import prepare_data

ORIGINAL_EXCLUSIONS = ["95", "145", "146", "158", "159", "160", "161"]


@pytest.fixture(scope="module")
def campus_train(shared_data: Path) -> pd.DataFrame:
    return read_labels(shared_data / "campus-train-labels.csv")


def test_real_labels_read_with_1_based_regions(campus_train: pd.DataFrame) -> None:
    assert len(campus_train) == 6542
    assert campus_train["Region_ID"].between(1, 15).all()
    assert (campus_train["region"] == campus_train["Region_ID"] - 1).all()
    assert campus_train["row"].tolist() == list(range(6542))


def test_explicit_exclusions_by_row_and_filename(campus_train: pd.DataFrame) -> None:
    out = apply_exclusions(campus_train, ORIGINAL_EXCLUSIONS)
    assert len(out) == 6542 - 7
    assert not out["row"].isin([95, 145, 146, 158, 159, 160, 161]).any()
    out = apply_exclusions(campus_train, ["img_0000.jpg"])
    assert "img_0000.jpg" not in set(out["filename"]) and len(out) == 6541


def test_percentile_filter_drops_extreme_outliers_fitted_on_train_only(campus_train: pd.DataFrame) -> None:
    train, held = stratified_split(campus_train, 0.15, seed=0)
    stats = CoordStats.fit(train, 1.0, 99.0)
    # bounds come from the training split alone
    ll = train[["latitude", "longitude"]].to_numpy()
    assert stats.low == pytest.approx(tuple(np.percentile(ll, 1, axis=0)))
    assert stats.high == pytest.approx(tuple(np.percentile(ll, 99, axis=0)))
    kept = drop_outliers(train, stats)
    assert kept["latitude"].max() < 250_000 and kept["longitude"].max() < 200_000  # 61121506 and 709618 gone
    assert kept["latitude"].min() > 200_000 and kept["longitude"].min() > 100_000  # the zeros gone
    assert 0.95 * len(train) < len(kept) < len(train)
    # mean/std are those of the kept rows: normalised training coordinates are standardised
    z = stats.normalize(kept[["latitude", "longitude"]].to_numpy())
    assert np.allclose(z.mean(0), 0, atol=1e-9) and np.allclose(z.std(0), 1, atol=1e-9)


def test_normalisation_round_trip(campus_train: pd.DataFrame) -> None:
    stats = CoordStats.fit(campus_train)
    ll = campus_train[["latitude", "longitude"]].to_numpy(np.float64)[:100]
    assert np.allclose(stats.denormalize(stats.normalize(ll)), ll, rtol=0, atol=1e-6)


def test_stratified_split_is_deterministic_and_per_region(campus_train: pd.DataFrame) -> None:
    a_keep, a_held = stratified_split(campus_train, 0.3, seed=0)
    b_keep, b_held = stratified_split(campus_train, 0.3, seed=0)
    _, c_held = stratified_split(campus_train, 0.3, seed=1)
    assert a_held["filename"].tolist() == b_held["filename"].tolist()
    assert a_held["filename"].tolist() != c_held["filename"].tolist()
    assert not set(a_keep["filename"]) & set(a_held["filename"])
    counts = campus_train["region"].value_counts()
    held = a_held["region"].value_counts()
    for region, n in counts.items():
        assert held[region] == max(1, round(0.3 * n))


def test_prepare_data_fits_on_train_only(tmp_path: Path) -> None:
    """A wild outlier in the held-out part must not move the training statistics."""
    rows = []
    for i in range(40):
        rows.append({"filename": f"{i}.png", "latitude": 100 + i, "longitude": 200 + i, "Region_ID": 1 + i % 2})
    df = pd.DataFrame(rows)
    (tmp_path / "img").mkdir()
    for name in df["filename"]:
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / name)
    df.to_csv(tmp_path / "train.csv", index=False)
    val = df.head(4).assign(latitude=1e9)
    val.to_csv(tmp_path / "val.csv", index=False)
    prep = prepare_data(tmp_path / "train.csv", tmp_path / "img", data_cfg=DataConfig(), val_csv=tmp_path / "val.csv")
    assert prep.stats.high[0] < 200
    assert len(prep.val) == 4 and prep.num_regions == 2


def test_region_centroids() -> None:
    df = pd.DataFrame({"latitude": [0.0, 2.0, 10.0], "longitude": [0.0, 2.0, 10.0], "region": [0, 0, 2]})
    c = region_centroids(df, 3)
    assert c.tolist() == [[1.0, 1.0], [4.0, 4.0], [10.0, 10.0]]  # region 1 absent: overall mean


def test_dataloader_batch_from_real_dataset(synthetic_dataset) -> None:
    csv, images = synthetic_dataset
    df = read_labels(csv)
    stats = CoordStats.fit(df)
    ds = GeoDataset(df, images, build_transforms(((0.5,) * 3, (0.5,) * 3), 32, train=True), stats)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["coords"].shape == (8, 2) and batch["region"].dtype == torch.int64
    assert ((batch["region"] >= 0) & (batch["region"] < 3)).all()


def test_transforms_differ_between_train_and_eval() -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    ev = build_transforms(((0.5,) * 3, (0.25,) * 3), 32, train=False)
    a, b = ev(img), ev(img)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    tr = build_transforms(((0.5,) * 3, (0.25,) * 3), 32, train=True)
    torch.manual_seed(0)
    assert not torch.equal(tr(img), a)


def test_outlier_filter_never_removes_a_whole_region() -> None:
    """A small region at the edge of the campus lies entirely beyond the 1st percentile: it stays."""
    rows = [{"latitude": 100.0 + i, "longitude": 100.0 + i, "region": 0} for i in range(98)]
    rows += [{"latitude": 0.0, "longitude": 0.0, "region": 1}, {"latitude": 1.0, "longitude": 0.5, "region": 1}]
    rows += [{"latitude": 5000.0, "longitude": 100.0, "region": 0}]  # a real outlier in a big region
    df = pd.DataFrame(rows)
    stats = CoordStats.fit(df, 2.0, 99.0)
    kept = drop_outliers(df, stats)
    assert (kept["region"] == 1).sum() == 2
    assert kept["latitude"].max() < 5000


def test_zoomed_transform_keeps_the_centre() -> None:
    """zoom=0.5 of a photo whose middle 60 % is red and border blue gives an all-red view."""
    from PIL import Image

    from geomodel.data.transforms import build_transforms

    img = Image.new("RGB", (40, 40), (0, 0, 255))
    img.paste((255, 0, 0), (8, 8, 32, 32))
    stats = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    x = build_transforms(stats, 16, train=False, zoom=0.5)(img)
    assert x.shape == (3, 16, 16) and x[0].min() > 0.9 and x[2].max() < 0.1
    plain = build_transforms(stats, 16, train=False)(img)
    assert plain[2, 0, 0] > 0.9  # the border is still there without zoom
    with pytest.raises(ValueError, match="zoom"):
        build_transforms(stats, 16, train=False, zoom=0)


def test_neighbour_targets_give_near_regions_more_of_the_smoothing() -> None:
    from geomodel.data.labels import neighbour_targets

    centroids = np.array([[0.0, 0.0], [0.0, 100.0], [0.0, 200.0], [0.0, 5000.0]])
    t = neighbour_targets(centroids, "planar", 0.3)
    assert t.shape == (4, 4) and np.allclose(t.sum(axis=1), 1.0)
    assert np.allclose(np.diag(t), 0.7)
    assert t[0, 1] > t[0, 2] > t[0, 3] >= 0  # the closer the region, the more partial credit
    assert np.isclose(t[1, 0], t[1, 2])  # equidistant neighbours share equally
    assert np.isclose(t[3, 2], 0.3)  # a region far from all others gives its share to the nearest one
    assert np.allclose(neighbour_targets(centroids, "planar", 0.0), np.eye(4))


def test_load_image_draft_decodes_jpegs_at_reduced_scale(tmp_path):
    from PIL import Image

    from geomodel.data.images import load_image

    Image.new("RGB", (800, 600), (20, 120, 200)).save(tmp_path / "big.jpg")
    Image.new("RGB", (800, 600), (20, 120, 200)).save(tmp_path / "big.png")
    small = load_image(tmp_path / "big.jpg", draft=(96, 96))
    assert small.mode == "RGB" and 96 <= min(small.size) and small.size[0] < 800  # 1/2..1/8 scale, still >= 96
    assert load_image(tmp_path / "big.png", draft=(96, 96)).size == (800, 600)  # other formats: full size
    assert load_image(tmp_path / "big.jpg").size == (800, 600)
