"""Bad input everywhere it enters (images, labels CSVs, the CLI): a clear message naming the file or
row, and in a batch every good photo still gets its prediction while the bad ones are listed."""
from __future__ import annotations

import csv
import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geomodel.config import DataConfig, ModelConfig, to_dict
from geomodel.data.dataset import check_images
from geomodel.data.images import MAX_FILE_BYTES, MAX_PIXELS, load_image, verify_image
from geomodel.data.labels import read_labels
from geomodel.engine.checkpoint import atomic_save, make_checkpoint
from geomodel.engine.stages import prepare_data
from geomodel.errors import DataError, ImageError
from geomodel.models.coords import CoordRegressor
from geomodel.models.region import RegionClassifier
from geomodel.predictor import Predictor
from train.cli import main

HEADER = "filename,latitude,longitude,Region_ID\n"


# --------------------------------------------------------------------------- helpers


def png_bytes(width: int, height: int, *, rows: int | None = None, bit_depth: int = 8) -> bytes:
    """A grayscale PNG written by hand: `rows` (default all) zero rows, streamed through zlib, so a
    100-megapixel image costs a few hundred kilobytes and no big buffer. rows=0 gives a header only."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = height if rows is None else rows
    comp = zlib.compressobj(9)
    line = bytes(1 + width * bit_depth // 8)  # filter byte + pixels
    idat = b"".join(comp.compress(line) for _ in range(rows)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def photo(size: tuple[int, int] = (40, 30), fmt: str = "JPEG", **kw) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def bad_files(tmp_path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its error message must contain)."""
    d = tmp_path / "bad"
    d.mkdir()
    jpeg, png = photo(), photo(fmt="PNG")
    (d / "folder.jpg").mkdir()
    return {
        "empty": (write(d / "empty.jpg", b""), "empty (0 bytes)"),
        "text": (write(d / "notes.jpg", b"lat,lon\n1,2\nthis is not an image\n"), "text file, not an image"),
        "pdf": (write(d / "scan.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"), "PDF document"),
        "truncated_jpeg": (write(d / "cut.jpg", jpeg[: len(jpeg) // 2]), "truncated"),
        "truncated_png": (write(d / "cut.png", png[: len(png) // 2]), "truncated"),
        "bomb_header": (write(d / "bomb.png", png_bytes(100_000, 100_000, rows=0)), "too large"),
        "missing": (d / "missing.jpg", "file not found"),
        "folder": (d / "folder.jpg", "folder"),
    }


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("case", ["empty", "text", "pdf", "truncated_jpeg", "truncated_png", "bomb_header",
                                  "missing", "folder"])
def test_bad_image_files_are_refused_with_the_reason(bad_files, case):
    path, phrase = bad_files[case]
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert str(path) in str(err.value) and phrase in str(err.value)
    with pytest.raises(ImageError, match=phrase.split(" (")[0]):  # the training-time check says the same
        verify_image(path)


def test_bad_bytes_are_refused_like_files(bad_files):
    for case in ("empty", "text", "pdf", "truncated_jpeg", "bomb_header"):
        path, phrase = bad_files[case]
        with pytest.raises(ImageError, match=re.escape(phrase)):
            load_image(path.read_bytes())


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    # The header claims 100000x100000 but no pixel data follows: decoding would report it as truncated,
    # so "too large" proves the refusal came from the header alone.
    path = write(tmp_path / "claims_huge.png", png_bytes(100_000, 100_000, rows=0))
    assert path.stat().st_size < 100
    with pytest.raises(ImageError, match="too large") as err:
        load_image(path)
    assert "truncated" not in str(err.value)


@pytest.mark.parametrize("side", [8_100, 10_000])  # just over MAX_PIXELS; over Pillow's own bomb warning
def test_tiny_but_huge_png_is_refused(tmp_path, side):
    path = write(tmp_path / "zeros.png", png_bytes(side, side))  # a complete, valid all-black image
    assert path.stat().st_size < 500_000 and side * side > MAX_PIXELS
    with pytest.raises(ImageError, match="too large|the limit is"):
        load_image(path)


def test_pixel_limit_message_gives_the_size(tmp_path):
    path = write(tmp_path / "small.jpg", photo((40, 30)))
    with pytest.raises(ImageError, match=r"40x30 = 1,200 pixels; the limit is 1,000"):
        load_image(path, max_pixels=1_000)


def test_file_over_the_byte_limit_is_refused_unread(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as fh:  # sparse: costs no disk
        fh.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ImageError, match=r"MB; the limit is 50 MB"):
        load_image(path)


def _roundtrip(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_cmyk_jpeg_becomes_rgb():
    data = _roundtrip(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG")  # pure red in CMYK
    out = load_image(data)
    assert out.mode == "RGB" and out.size == (16, 8)
    r, g, b = np.asarray(out).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_palette_with_transparency_is_composited_on_white():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 0, 4, 8))
    img.info["transparency"] = 0  # the black half is transparent
    out = load_image(_roundtrip(img, "PNG"))
    a = np.asarray(out)
    assert out.mode == "RGB"
    assert (a[:, :4] == [255, 0, 0]).all() and (a[:, 4:] == 255).all()


def test_16bit_grayscale_is_scaled_not_clipped():
    arr = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    img = Image.fromarray(arr)
    data = _roundtrip(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    a = np.asarray(load_image(data))[..., 0].astype(int)
    assert a.min() == 0 and a.max() == 255 and len(np.unique(a)) > 30  # a ramp, not black-and-white


def _ramp16(path: Path, w: int, h: int) -> Path:
    """A 16-bit grayscale PNG: a vertical ramp over the whole 0..65535 range."""
    ramp = np.repeat(np.linspace(0, 65535, h).astype(np.uint16)[:, None], w, 1)
    Image.fromarray(ramp).save(path, compress_level=1)
    return path


def test_16bit_png_is_converted_without_a_full_size_float64_copy(tmp_path):
    """Converting a 16-bit image took 16 bytes a pixel on top of the decoded image (two float64 copies):
    a near-limit 64-megapixel PNG cost 1.2 GB. Python-side allocations are what tracemalloc sees."""
    import tracemalloc

    path = _ramp16(tmp_path / "ramp16.png", 1500, 1200)
    tracemalloc.start()
    try:
        full = load_image(path)
        full_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        small = load_image(path, shorter_side=120)
        small_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    pixels = 1500 * 1200
    assert full_peak < 8 * pixels  # less than one float64 copy of the image
    assert small_peak < 0.5 * pixels  # decoded down first: nothing of full size is converted
    assert full.size == (1500, 1200) and small.size == (150, 120)
    column = np.asarray(small)[:, 0, 0].astype(int)
    assert column[0] < 5 and column[-1] > 250 and (np.diff(column) >= 0).all()  # the ramp, stretched and kept


def test_jpeg_is_decoded_at_reduced_scale_and_stays_upright(tmp_path):
    img = Image.new("RGB", (1600, 1000), (255, 0, 0))
    img.paste((0, 0, 255), (800, 0, 1600, 1000))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    path = tmp_path / "big.jpg"
    img.save(path, "JPEG", exif=exif.tobytes(), quality=90)
    out = load_image(path, shorter_side=200)
    assert out.size == (200, 320)  # upright (portrait), shorter side 200
    a = np.asarray(out).astype(int)
    assert a[:150, :, 0].mean() > 200 and a[170:, :, 2].mean() > 200  # red now on top, blue below
    with Image.open(path) as probe:  # draft: the DCT decodes 1/4 of each side, never the full 1.6 MP
        probe.draft(None, (200, 200))
        assert probe.size == (400, 250)


def test_decoded_size_is_what_load_image_decodes_and_feeds_a_pixel_budget(tmp_path):
    from geomodel.data.images import PixelBudget, decoded_size

    jpeg = tmp_path / "a.jpg"
    Image.new("RGB", (1600, 1200), (10, 200, 30)).save(jpeg, quality=90)
    assert decoded_size(jpeg) == (1600, 1200)
    assert decoded_size(jpeg, shorter_side=300) == (400, 300)  # JPEG draft: 1/4 of each side
    png = _ramp16(tmp_path / "b.png", 1000, 700)
    assert decoded_size(png, shorter_side=300) == (1000, 700)  # a PNG is always decoded whole
    with pytest.raises(ImageError, match="this is a text file"):
        decoded_size(write(tmp_path / "notes.jpg", b"not a photo\n"))
    budget = PixelBudget(1_000_000)
    for _ in range(4):
        budget.take(400 * 300, str(jpeg))
    with pytest.raises(ImageError, match=r"b.png: not decoded: it needs 0.7 megapixels .* used 0.48 of the 1 "):
        budget.take(1000 * 700, str(png))
    assert budget.used == 4 * 400 * 300  # a refused photo costs nothing


@pytest.mark.parametrize("mode", ["LA", "La", "1", "L", "RGBA", "I", "F", "YCbCr", "HSV"])
def test_unusual_modes_become_rgb(mode):
    out = load_image(Image.new(mode, (6, 4)))
    assert out.mode == "RGB" and out.size == (6, 4)


def test_la_png_keeps_gray_and_whitens_transparency():
    img = Image.new("LA", (8, 8), (100, 255))
    img.paste((0, 0), (4, 0, 8, 8))  # right half fully transparent
    a = np.asarray(load_image(_roundtrip(img, "PNG")))
    assert (a[:, :4] == 100).all() and (a[:, 4:] == 255).all()


def test_exif_rotated_photo_is_upright(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    assert Image.open(path).size == (40, 20)
    out = load_image(path)
    assert out.size == (20, 40)
    a = np.asarray(out).astype(int)
    top, bottom = a[:18].reshape(-1, 3).mean(0), a[22:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_heic_without_plugin_says_what_to_install(tmp_path):
    try:
        import pillow_heif  # noqa: F401
        pytest.skip("pillow-heif is installed here, so HEIC photos are readable")
    except ImportError:
        pass
    heic = struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + bytes(64)
    for path in (write(tmp_path / "IMG_0001.HEIC", heic), write(tmp_path / "renamed.jpg", heic)):
        with pytest.raises(ImageError, match="pillow-heif") as err:
            load_image(path)
        assert str(path) in str(err.value)


# --------------------------------------------------------------------------- Predictor and CLI batches


def write_model_dir(out: Path, num_regions: int = 3, coords_regions: int | None = None, *,
                    names: list[str] | None = None, coord_mean: float = 500.0) -> Path:
    """An untrained but complete model directory (resnet18, 32 px, shared layout): enough for I/O tests."""
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    rcfg = ModelConfig(kind="region", backbone="resnet18", pretrained=False, num_regions=num_regions)
    region = RegionClassifier(rcfg, image_size=32)
    common = dict(data_config=to_dict(DataConfig(image_size=32)), image_size=32, frame="planar",
                  norm=(region.backbone.mean, region.backbone.std))
    names = names or [f"Region {i + 1}" for i in range(num_regions)]
    atomic_save(make_checkpoint(region, kind="region", model_config=to_dict(rcfg), region_names=names, **common),
                out / "region.pt")
    n2 = coords_regions or num_regions
    ccfg = ModelConfig(kind="coords", backbone="resnet18", pretrained=False, num_regions=n2, region_embed_dim=8,
                       hidden_dim=16)
    coords = CoordRegressor(ccfg, feature_dim=512, image_size=32)
    coords.coord_mean.fill_(coord_mean)
    ckpt = make_checkpoint(coords, kind="coords", model_config=to_dict(ccfg),
                           region_names=names if n2 == num_regions else [f"Region {i + 1}" for i in range(n2)],
                           coord_stats={"mean": (500.0, 500.0), "std": (1.0, 1.0), "low": (0, 0), "high": (1e3, 1e3)},
                           **common)
    ckpt["feature_dim"] = 512
    atomic_save(ckpt, out / "coords.pt")
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture
def good_files(tmp_path) -> list[Path]:
    d = tmp_path / "good"
    d.mkdir()
    return [write(d / "a.jpg", photo()), write(d / "b.png", photo((20, 50), "PNG"))]


def test_predictor_batch_keeps_every_good_result(model_dir, good_files, bad_files):
    predictor = Predictor.from_dir(model_dir, device="cpu")
    bad = [path for path, _ in bad_files.values()]
    pil = Image.open(good_files[0])
    items = [good_files[0], *bad[:4], good_files[1], *bad[4:], pil, good_files[0].read_bytes()]
    results = predictor.predict(items)
    assert len(results) == len(items)
    good_idx = [0, 5, len(items) - 2, len(items) - 1]
    for i, r in enumerate(results):
        if i in good_idx:
            assert r["error"] is None and r["region_id"] in (1, 2, 3) and np.isfinite(r["latitude"])
            assert 0 < r["region_prob"] <= 1 and len(r["top_k"]) == 3
        else:
            assert r["region_id"] is None and r["latitude"] is None and r["top_k"] == []
            assert str(items[i]) in r["error"]
    for (path, phrase), r in zip(bad_files.values(), results[1:5] + results[6:-2]):
        assert phrase in r["error"] and r["file"] == str(path)
    # Same photo, same answer, whether given as a path, a PIL image or bytes.
    assert results[0]["region_id"] == results[-2]["region_id"] == results[-1]["region_id"]
    assert results[0]["latitude"] == pytest.approx(results[-1]["latitude"])


def test_predictor_batch_of_only_bad_images_does_not_raise(model_dir, bad_files):
    results = Predictor.from_dir(model_dir, device="cpu").predict([p for p, _ in bad_files.values()])
    assert all(r["error"] for r in results)


def test_cli_predict_lists_bad_files_and_predicts_the_rest(model_dir, good_files, bad_files, tmp_path, capsys):
    bad = [str(p) for p, _ in bad_files.values()]
    out_csv = tmp_path / "pred.csv"
    rc = main(["predict", "--model", str(model_dir), str(good_files[0]), *bad, str(good_files[1]),
               "--device", "cpu", "--csv-out", str(out_csv)])
    captured = capsys.readouterr()
    assert rc == 0
    assert str(good_files[0]) in captured.out and str(good_files[1]) in captured.out
    for path, phrase in bad_files.values():
        assert f"{path}: ERROR" in captured.err and phrase in captured.err
    rows = list(csv.DictReader(open(out_csv)))
    assert len(rows) == 2 + len(bad)
    assert [bool(r["error"]) for r in rows] == [False] + [True] * len(bad) + [False]


def test_cli_predict_csv_writes_formula_like_text_as_text(tmp_path, monkeypatch, capsys):
    """Same rule as the app's Download CSV (one function): names and reasons are text, numbers stay numbers."""
    model = write_model_dir(tmp_path / "m", names=["=evil()", "@east", "North"], coord_mean=-500.0)
    monkeypatch.chdir(tmp_path)
    names = ["=1+2.jpg", "@SUM(1+1).jpg", "+x.jpg", "-x.jpg"]
    for name in names:
        write(tmp_path / name, photo())
    rc = main(["predict", "--model", str(model), "--device", "cpu", "--csv-out", "out.csv", "--", *names,
               "-gone.jpg"])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert [r["file"] for r in rows] == ["'" + n for n in names] + ["'-gone.jpg"]
    assert all(r["region_name"] in ("'=evil()", "'@east", "North") for r in rows[:4])
    assert all(float(r["latitude"]) < 0 and not r["latitude"].startswith("'") for r in rows[:4])
    assert rows[-1]["error"].startswith("'-gone.jpg: file not found")


def test_cli_predict_fails_when_no_image_is_usable(model_dir, bad_files, capsys):
    rc = main(["predict", "--model", str(model_dir), *(str(p) for p, _ in bad_files.values()), "--device", "cpu"])
    assert rc == 1
    assert "file not found" in capsys.readouterr().err


@pytest.fixture
def eval_set(tmp_path, bad_files) -> tuple[Path, Path]:
    images = tmp_path / "eval"
    images.mkdir()
    for i in range(4):
        write(images / f"ok{i}.jpg", photo((32 + i, 32)))
    write(images / "cut.jpg", bad_files["truncated_jpeg"][0].read_bytes())
    rows = [f"ok{i}.jpg,{500 + i},{500 - i},{i % 3 + 1}" for i in range(4)] + ["cut.jpg,1,1,1", "gone.jpg,1,1,2"]
    csv_path = write(tmp_path / "eval.csv", (HEADER + "\n".join(rows) + "\n").encode())
    return csv_path, images


def test_cli_evaluate_skips_and_lists_bad_images(model_dir, eval_set, tmp_path, capsys):
    csv_path, images = eval_set
    out = tmp_path / "metrics.json"
    rc = main(["evaluate", "--model", str(model_dir), "--csv", str(csv_path), "--images", str(images),
               "--device", "cpu", "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "images: 6 (2 could not be read)" in printed
    assert "skipped cut.jpg" in printed and "truncated" in printed
    assert "skipped gone.jpg" in printed and "file not found" in printed
    metrics = json.loads(out.read_text())
    assert metrics["n_images"] == 6 and metrics["n_failed"] == 2
    assert {f["filename"] for f in metrics["failed"]} == {"cut.jpg", "gone.jpg"}
    assert np.isfinite(metrics["median_error"]) and 0 <= metrics["region_accuracy"] <= 1


def test_cli_evaluate_with_no_readable_image_is_an_error(model_dir, tmp_path, capsys):
    csv_path = write(tmp_path / "none.csv", (HEADER + "gone1.jpg,1,1,1\ngone2.jpg,1,1,2\n").encode())
    (tmp_path / "imgs").mkdir()
    rc = main(["evaluate", "--model", str(model_dir), "--csv", str(csv_path), "--images", str(tmp_path / "imgs"),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "none of the 2 images" in err and "gone1.jpg" in err


def test_cli_evaluate_refuses_more_regions_than_the_model_has(model_dir, eval_set, tmp_path, capsys):
    _, images = eval_set
    csv_path = write(tmp_path / "r4.csv", (HEADER + "ok0.jpg,1,1,1\nok1.jpg,1,1,4\n").encode())
    rc = main(["evaluate", "--model", str(model_dir), "--csv", str(csv_path), "--images", str(images),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{csv_path}" in err and "line 3" in err and "3" in err and "trained with" in err


# --------------------------------------------------------------------------- paths outside --images


@pytest.fixture
def outside_rows(tmp_path) -> tuple[Path, Path, Path]:
    """(images folder, CSV whose lines 3-5 name files outside it, a real photo outside it)."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        write(images / f"ok{i}.jpg", photo((32 + i, 32)))
    (tmp_path / "private").mkdir()
    elsewhere = write(tmp_path / "private" / "secret.jpg", photo())
    (images / "link.jpg").symlink_to(elsewhere)  # inside by name, outside once the link is followed
    (images / "inner_link.jpg").symlink_to(images / "ok0.jpg")  # a link that stays inside is fine
    rows = ["ok0.jpg,500,500,1", "../private/secret.jpg,501,499,2", "/etc/hostname,500,500,3",
            "link.jpg,500,500,1", "ok1.jpg,502,498,2", "ok2.jpg,499,501,3", "inner_link.jpg,500,500,1"]
    return images, write(tmp_path / "labels.csv", (HEADER + "\n".join(rows) + "\n").encode()), elsewhere


def test_paths_outside_the_image_folder_are_refused_naming_the_lines(outside_rows):
    from geomodel.data.paths import image_paths

    images, csv_path, _ = outside_rows
    df = read_labels(csv_path)
    with pytest.raises(DataError) as err:
        image_paths(df, images, csv_path)
    msg = str(err.value)
    assert msg.startswith(f"{csv_path}: image path outside the image folder {images}")
    assert "'../private/secret.jpg'" in msg and "on lines 3, 4, 5;" in msg and "--allow-outside-images" in msg
    assert image_paths(df, images, csv_path, allow_outside=True)[1] == images / "../private/secret.jpg"


def test_a_hugging_face_cache_snapshot_counts_as_inside_but_only_through_its_blobs(tmp_path):
    """hf:// folders are snapshots whose files are links into the repository's blobs/ (huggingface_hub's layout)."""
    from geomodel.data.paths import image_paths

    repo = tmp_path / "hub" / "datasets--owner--val"
    (repo / "blobs").mkdir(parents=True)
    images = repo / "snapshots" / "0123abcd" / "val" / "images"
    images.mkdir(parents=True)
    write(repo / "blobs" / "aaaa", photo())
    (images / "a.jpg").symlink_to("../../../../blobs/aaaa")
    write(tmp_path / "secret.jpg", photo())
    (images / "b.jpg").symlink_to(tmp_path / "secret.jpg")  # a link out of the cache is still outside
    ok = read_labels(write(tmp_path / "ok.csv", (HEADER + "a.jpg,1,2,1\n").encode()))
    assert image_paths(ok, images, "ok.csv") == [images / "a.jpg"]
    bad = read_labels(write(tmp_path / "bad.csv", (HEADER + "a.jpg,1,2,1\nb.jpg,1,2,1\n../../../../blobs/aaaa,1,2,1\n"
                                                  ).encode()))
    with pytest.raises(DataError, match="on lines 3, 4;"):  # the link elsewhere, and a name that leaves the folder
        image_paths(bad, images, "bad.csv")


def test_cli_evaluate_reads_nothing_outside_images_unless_allowed(model_dir, outside_rows, tmp_path, capsys):
    images, csv_path, _ = outside_rows
    args = ["evaluate", "--model", str(model_dir), "--csv", str(csv_path), "--images", str(images), "--device", "cpu",
            "--json", str(tmp_path / "m.json")]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "outside the image folder" in captured.err and "lines 3, 4, 5" in captured.err
    assert "region accuracy" not in captured.out and not (tmp_path / "m.json").exists()
    assert main(args + ["--allow-outside-images"]) == 0  # the user's explicit choice: the photo outside is used
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_images"] == 7 and {f["filename"] for f in metrics["failed"]} == {"/etc/hostname"}


def test_fit_and_learning_curve_refuse_paths_outside_images(outside_rows, tmp_path, capsys):
    images, csv_path, _ = outside_rows
    with pytest.raises(DataError, match="outside the image folder"):
        prepare_data(csv_path, images, data_cfg=DataConfig(image_size=32, outlier_low_pct=0, outlier_high_pct=100),
                     check=False)
    prep = prepare_data(csv_path, images, data_cfg=DataConfig(image_size=32, outlier_low_pct=0, outlier_high_pct=100),
                        check=False, allow_outside_images=True)
    assert len(prep.train) + len(prep.val) >= 6  # (the early-stopping set drops rows outside the train bounds)
    rc = main(["fit", "--csv", str(csv_path), "--images", str(images), "--out", str(tmp_path / "run"),
               "--backbone", "resnet18", "--pretrained", "none", "--image-size", "32", "--device", "cpu"])
    assert rc == 2 and "outside the image folder" in capsys.readouterr().err
    rc = main(["learning-curve", "--csv", str(csv_path), "--images", str(images), "--out", str(tmp_path / "curve"),
               "--pretrained", "none", "--image-size", "32", "--device", "cpu"])
    assert rc == 2 and "lines 3, 4, 5" in capsys.readouterr().err
    assert not (tmp_path / "curve").exists()


# --------------------------------------------------------------------------- labels CSV


def csv_file(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    return write(tmp_path / name, text.encode())


def test_missing_column_names_the_file_and_column(tmp_path):
    path = csv_file(tmp_path, "filename,latitude,Region_ID\na.jpg,1,1\n")
    with pytest.raises(DataError, match=r"missing required column\(s\) 'longitude'") as err:
        read_labels(path)
    assert str(path) in str(err.value)


def test_renamed_columns_get_a_rename_hint(tmp_path):
    path = csv_file(tmp_path, "image,lat,lng,region\na.jpg,1,2,1\n")
    msg = str(pytest.raises(DataError, read_labels, path).value)
    for col, found in (("filename", "image"), ("latitude", "lat"), ("longitude", "lng"), ("Region_ID", "region")):
        assert f"'{col}' (found '{found}': rename it)" in msg


def test_semicolon_separated_csv_is_explained(tmp_path):
    path = csv_file(tmp_path, "filename;latitude;longitude;Region_ID\na.jpg;1;2;1\n")
    with pytest.raises(DataError, match="separated by ';'"):
        read_labels(path)


@pytest.mark.parametrize("value", ["", "NaN", "north", "inf", "1,5"])
def test_bad_coordinates_name_the_line_and_column(tmp_path, value):
    cell = f'"{value}"' if "," in value else value
    path = csv_file(tmp_path, HEADER + "a.jpg,1,2,1\nb.jpg,3,4,1\n" + f"c.jpg,{cell},4,1\n")
    with pytest.raises(DataError) as err:
        read_labels(path)
    msg = str(err.value)
    assert str(path) in msg and "line 4" in msg and "'latitude'" in msg and "not a number" in msg
    assert "np." not in msg and "float64" not in msg  # the cell as written, not numpy's repr


@pytest.mark.parametrize("frame, column, value", [("planar", "latitude", "1e308"), ("planar", "longitude", "-1e200"),
                                                  ("planar", "latitude", "2e15"), ("wgs84", "latitude", "90.5"),
                                                  ("wgs84", "longitude", "-181")])
def test_coordinates_that_mean_no_place_name_the_line(tmp_path, frame, column, value):
    lat, lon = (value, "4") if column == "latitude" else ("3", value)
    path = csv_file(tmp_path, HEADER + "a.jpg,1,2,1\nb.jpg,3,4,1\n" + f"c.jpg,{lat},{lon},1\n")
    with pytest.raises(DataError) as err:
        read_labels(path, frame=frame)
    msg = str(err.value)
    assert str(path) in msg and "line 4" in msg and repr(column) in msg and "outside" in msg
    assert f"{float(value):g}" in msg
    if frame == "wgs84":
        read_labels(path, frame="planar")  # the same numbers are fine as planar units


def test_cli_evaluate_refuses_a_coordinate_that_overflows_the_metrics(model_dir, eval_set, tmp_path, capsys):
    _, images = eval_set
    csv_path = write(tmp_path / "huge.csv", (HEADER + "ok0.jpg,500,500,1\nok1.jpg,1e308,500,2\n").encode())
    rc = main(["evaluate", "--model", str(model_dir), "--csv", str(csv_path), "--images", str(images),
               "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 2 and "coordinate MSE" not in captured.out
    assert f"{csv_path}: column 'latitude' is outside" in captured.err and "line 3" in captured.err


def test_fit_refuses_region_ids_with_gaps_naming_the_line(tmp_path, synthetic_dataset, capsys):
    """One stray Region_ID 99 among 1..3 would otherwise train a 99-region model without a word."""
    csv_path, images = synthetic_dataset
    lines = csv_path.read_text().splitlines()
    head, rows = lines[0], lines[1:]
    cols = head.split(",")
    cells = rows[6].split(",")
    cells[cols.index("Region_ID")] = "99"
    rows[6] = ",".join(cells)
    stray = write(tmp_path / "stray.csv", ("\n".join([head, *rows]) + "\n").encode())
    rc = main(["fit", "--csv", str(stray), "--images", str(images), "--out", str(tmp_path / "run"),
               "--backbone", "resnet18", "--pretrained", "none", "--image-size", "32", "--epochs", "1",
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{stray}: region ids must run 1..N" in err and "regions 4-98 have no training photos" in err
    assert "line 8" in err and "--num-regions 99" in err
    assert not (tmp_path / "run" / "region_last.pt").exists()


def test_cpu_small_with_another_backbone_is_one_line_not_a_traceback(tmp_path, synthetic_dataset, capsys):
    """cpu-small matches EfficientNet-Lite block maps: with resnet18 the fit stops before any work, saying
    which flags make it a head-only model."""
    csv_path, images = synthetic_dataset
    base = ["fit", "--preset", "cpu-small", "--csv", str(csv_path), "--images", str(images),
            "--backbone", "resnet18", "--pretrained", "none", "--image-size", "32", "--epochs", "1",
            "--coords-epochs", "1", "--device", "cpu"]
    rc = main([*base, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.startswith("error: feature layers") and "need an efficientnet_lite* backbone" in err
    assert not (tmp_path / "run").exists()
    rc = main([*base, "--out", str(tmp_path / "ok"), "--feature-layers", "head", "--match-layers", ""])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "ok" / "region.pt").exists()


def test_explicit_num_regions_warns_once_per_empty_region(synthetic_dataset):
    csv_path, images = synthetic_dataset
    prep = prepare_data(csv_path, images, data_cfg=DataConfig(image_size=32, num_regions=5), check=False)
    assert prep.num_regions == 5
    assert [w.split(": ", 1)[1] for w in prep.warnings] == [
        "region 4 of 5 has no training photos; the model will never predict it",
        "region 5 of 5 has no training photos; the model will never predict it"]
    assert prepare_data(csv_path, images, data_cfg=DataConfig(image_size=32), check=False).warnings == []


def test_duplicate_filenames_are_listed(tmp_path):
    path = csv_file(tmp_path, HEADER + "a.jpg,1,2,1\nb.jpg,1,2,1\na.jpg,3,4,2\n")
    with pytest.raises(DataError, match=r"duplicate filename \(e.g. 'a.jpg'\) on lines 2, 4"):
        read_labels(path)


@pytest.mark.parametrize("region, phrase", [("0", "outside 1..3"), ("4", "outside 1..3"), ("-1", "outside 1..3"),
                                            ("1.5", "not a whole number"), ("two", "not a whole number"),
                                            ("", "not a whole number")])
def test_region_ids_outside_the_known_set(tmp_path, region, phrase):
    path = csv_file(tmp_path, HEADER + f"a.jpg,1,2,1\nb.jpg,1,2,{region}\n")
    with pytest.raises(DataError, match=phrase) as err:
        read_labels(path, num_regions=3)
    assert "line 3" in str(err.value) and "'Region_ID'" in str(err.value)


@pytest.mark.parametrize("text, phrase", [("", "the file is empty"), (HEADER, "no data rows"),
                                          (HEADER + "a.jpg,1,2,1\nb.jpg,1,2,1,9\n", "not a readable CSV")])
def test_empty_or_malformed_csv(tmp_path, text, phrase):
    with pytest.raises(DataError, match=phrase):
        read_labels(csv_file(tmp_path, text))


def test_missing_csv(tmp_path):
    with pytest.raises(DataError, match="labels CSV not found"):
        read_labels(tmp_path / "nope.csv")


def test_check_images_lists_every_bad_image_with_its_line(tmp_path, bad_files):
    images = tmp_path / "imgs"
    images.mkdir()
    write(images / "ok.jpg", photo())
    names = {"ok.jpg": None}
    for case in ("empty", "text", "pdf", "truncated_jpeg", "truncated_png", "bomb_header"):
        src, phrase = bad_files[case]
        write(images / src.name, src.read_bytes())
        names[src.name] = phrase
    names["not_there.jpg"] = "file not found"
    path = csv_file(tmp_path, HEADER + "".join(f"{n},1,2,1\n" for n in names))
    df = read_labels(path)
    with pytest.raises(DataError) as err:
        check_images(df, images, path)
    msg = str(err.value)
    assert f"{path}: 7 image(s) cannot be used" in msg
    for line, (name, phrase) in enumerate(names.items(), start=2):
        if phrase is not None:
            assert f"line {line}: {images / name}: " in msg and phrase in msg
    assert "ok.jpg" not in msg


def test_training_refuses_bad_images_before_it_starts(tmp_path, synthetic_dataset, capsys):
    csv_path, images = synthetic_dataset
    local = tmp_path / "images"
    local.mkdir()
    for f in images.iterdir():
        write(local / f.name, f.read_bytes())
    victim = sorted(local.iterdir())[5]
    write(victim, victim.read_bytes()[:200])
    out = tmp_path / "run"
    rc = main(["region", "--csv", str(csv_path), "--images", str(local), "--out", str(out), "--backbone", "resnet18",
               "--pretrained", "none", "--image-size", "32", "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "1 image(s) cannot be used" in err and victim.name in err and "truncated" in err
    assert not (out / "region_last.pt").exists()


def test_exclusions_that_remove_everything(tmp_path, synthetic_dataset):
    csv_path, images = synthetic_dataset
    n = len(read_labels(csv_path))
    cfg = DataConfig(image_size=32, exclude=[str(i) for i in range(n)])
    with pytest.raises(DataError, match=f"no rows left: the exclusion list removed all {n}"):
        prepare_data(csv_path, images, data_cfg=cfg)


def test_outlier_filter_that_leaves_nothing(tmp_path):
    path = csv_file(tmp_path, HEADER + "a.jpg,1,2,1\nb.jpg,3,4,1\nc.jpg,5,6,2\nd.jpg,7,8,2\n")
    with pytest.raises(DataError, match=f"{path}: no rows left after dropping coordinate outliers"):
        prepare_data(path, tmp_path, data_cfg=DataConfig(image_size=32, outlier_low_pct=60, outlier_high_pct=61),
                     check=False)


def test_validation_split_that_comes_out_empty(tmp_path):
    rows = "".join(f"{i}.jpg,{i},{i},{i + 1}\n" for i in range(4))  # one photo per region: nothing to hold out
    path = csv_file(tmp_path, HEADER + rows)
    with pytest.raises(DataError, match="validation set is empty"):
        prepare_data(path, tmp_path, data_cfg=DataConfig(image_size=32, outlier_low_pct=0, outlier_high_pct=100),
                     check=False)


def test_region_names_that_do_not_match_the_regions(tmp_path, synthetic_dataset):
    csv_path, images = synthetic_dataset
    with pytest.raises(DataError, match="2 region names given for 3 regions"):
        prepare_data(csv_path, images, data_cfg=DataConfig(image_size=32, region_names=["A", "B"]), check=False)


def test_contradicting_training_settings_get_a_message_not_a_traceback(tmp_path, capsys):
    from train.cli import main

    code = main(["fit", "--csv", str(tmp_path / "x.csv"), "--images", str(tmp_path), "--out", str(tmp_path / "m"),
                 "--feature-layers", "14,head", "--match-layers", "13"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: match_layers ['13'] are not among feature_layers") and "Traceback" not in err
