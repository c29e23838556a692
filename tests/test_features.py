"""Feature cache for frozen-backbone training: hits, misses on any change, fixed augmented views."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from geomodel.data.transforms import build_transforms
from geomodel.engine.features import FeatureCache, extract_features
from geomodel.models.backbones import build_backbone

SIZE = 32


class Counted:
    """A real backbone plus a forward hook counting the images it was run on."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.backbone = build_backbone("resnet18", pretrained=False, image_size=SIZE)
        self.images = 0
        self.backbone.register_forward_hook(lambda _m, args, _out: self._count(args[0]))

    def _count(self, x: torch.Tensor) -> None:
        self.images += len(x)

    def extract(self, paths: list[Path], cache: FeatureCache | None, *, train: bool = False, view: int | None = None,
                stats: tuple | None = None) -> torch.Tensor:
        stats = stats or (self.backbone.mean, self.backbone.std)
        policy = "eval" if view is None else f"aug{view}"
        return extract_features(self.backbone, paths, build_transforms(stats, SIZE, train=train),
                                device=torch.device("cpu"), batch_size=4, cache=cache, policy=policy,
                                image_size=SIZE, view_seed=view)


@pytest.fixture
def photos(synthetic_dataset, tmp_path) -> list[Path]:
    """Eight synthetic photos copied into a folder this test may change."""
    csv, images = synthetic_dataset
    folder = tmp_path / "images"
    folder.mkdir()
    names = pd.read_csv(csv)["filename"][:8]
    return [Path(shutil.copy(images / n, folder / n)) for n in names]


@pytest.fixture
def cache(tmp_path) -> FeatureCache:
    return FeatureCache(tmp_path / "cache")


def test_second_extraction_hits_the_cache(photos, cache):
    net = Counted()
    first = net.extract(photos, cache)
    assert net.images == len(photos) and first.shape == (len(photos), net.backbone.out_dim)
    second = net.extract(photos, cache)
    assert net.images == len(photos), "the second extraction ran the backbone again"
    assert torch.equal(first, second)
    # A new cache object over the same folder (another run, the other stage) also hits.
    again = net.extract(list(reversed(photos)), FeatureCache(cache.dir))
    assert net.images == len(photos)
    assert torch.equal(again, first.flip(0))


def test_cached_features_match_uncached_ones(photos, cache):
    net = Counted()
    cached = net.extract(photos, cache)
    plain = net.extract(photos, None)
    assert torch.allclose(cached, plain, rtol=1e-2, atol=1e-3)  # stored as float16


def test_changed_image_bytes_miss(photos, cache):
    net = Counted()
    before = net.extract(photos, cache)
    with Image.open(photos[3]) as im:
        changed = im.convert("RGB").transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    changed.save(photos[3])
    after = net.extract(photos, cache)
    assert net.images == len(photos) + 1, "only the changed photo should be recomputed"
    assert not torch.equal(after[3], before[3])
    assert torch.equal(after[:3], before[:3]) and torch.equal(after[4:], before[4:])


def test_changed_weights_miss(photos, cache):
    net = Counted(seed=0)
    before = net.extract(photos, cache)
    with torch.no_grad():
        next(net.backbone.parameters()).add_(0.01)
    after = net.extract(photos, cache)
    assert net.images == 2 * len(photos), "features of the old weights were reused"
    assert not torch.allclose(after, before)
    other = Counted(seed=1)  # another trunk of the same architecture
    other.extract(photos, cache)
    assert other.images == len(photos)


def test_changed_transform_misses(photos, cache):
    net = Counted()
    net.extract(photos, cache)
    net.extract(photos, cache, stats=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))  # other normalisation
    assert net.images == 2 * len(photos)


def test_augmented_views_are_fixed_and_differ_from_the_eval_view(photos, cache, tmp_path):
    net = Counted()
    plain = net.extract(photos, cache)
    rng_before = torch.get_rng_state()
    view0 = net.extract(photos, cache, train=True, view=0)
    assert torch.equal(torch.get_rng_state(), rng_before), "extraction disturbed the caller's random state"
    view1 = net.extract(photos, cache, train=True, view=1)
    assert net.images == 3 * len(photos)
    # Recomputed from scratch (fresh cache, other global seed): the same views again.
    torch.manual_seed(12345)
    again = net.extract(photos, FeatureCache(tmp_path / "fresh"), train=True, view=0)
    assert torch.equal(again, view0)
    for view in (view0, view1):
        assert not torch.allclose(view, plain)
    assert not torch.allclose(view0, view1)
    # ... and served from the cache afterwards.
    net.extract(photos, cache, train=True, view=1)
    assert net.images == 4 * len(photos)


def test_damaged_cache_file_is_rebuilt(photos, cache):
    net = Counted()
    first = net.extract(photos, cache)
    files = list(cache.dir.rglob("*.pt"))
    assert len(files) == 1  # one chunk (8 photos)
    files[0].write_bytes(b"not a torch file")
    second = net.extract(photos, cache)
    assert net.images == 2 * len(photos)
    assert torch.equal(first, second)
    net.extract(photos, cache)
    assert net.images == 2 * len(photos)


def test_features_can_feed_a_trained_head(photos, cache):
    net = Counted()
    feats = net.extract(photos, cache)
    head = torch.nn.Linear(feats.shape[1], 3)
    head(feats).sum().backward()  # inference-mode tensors would refuse this
    assert head.weight.grad is not None and not feats.requires_grad


def test_other_feature_layers_miss(photos, cache):
    """Same weights, other layers pooled: another function, so another cache entry."""
    torch.manual_seed(0)
    final = build_backbone("efficientnet_lite0", pretrained=False, image_size=SIZE)
    torch.manual_seed(0)
    multi = build_backbone("efficientnet_lite0", pretrained=False, image_size=SIZE, layers=("12", "head"))
    assert multi.trunk.net.state_dict().keys() == final.trunk.net.state_dict().keys()
    tf = build_transforms((final.mean, final.std), SIZE, train=False)
    run = dict(device=torch.device("cpu"), batch_size=4, cache=cache, image_size=SIZE)
    a = extract_features(final, photos, tf, **run)
    b = extract_features(multi, photos, tf, **run)
    assert a.shape[1] == final.out_dim and b.shape[1] == multi.out_dim != final.out_dim
