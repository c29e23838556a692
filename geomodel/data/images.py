"""Opening photos safely: EXIF orientation, any mode to RGB, clear errors, bounded memory."""
from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from geomodel.errors import ImageError

ImageInput = Union[str, Path, Image.Image, bytes, BinaryIO]

MAX_PIXELS = 64_000_000  # ~8000x8000: larger is refused before decoding (decompression bombs)
MAX_FILE_BYTES = 50 * 1024 * 1024  # larger files are refused unread (photos are a few MB)
_HEIF_SUFFIXES = {".heic", ".heif", ".avif"}
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits a channel
_BAND_ROWS = 256  # rows converted at a time by _stretch_to_l


def describe(image: ImageInput) -> str:
    """A short name for messages."""
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, Image.Image):
        return getattr(image, "filename", "") or "<image>"
    return getattr(image, "name", "<uploaded image>")


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation, then convert any mode (CMYK, P+transparency, I;16, LA, ...) to RGB.

    Transparent pixels are composited on white so they do not turn black; 16-bit and float
    images are stretched from their own min..max to 0..255.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in _WIDE_MODES:
        img = _stretch_to_l(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "La":  # premultiplied alpha: Pillow converts it to RGBA only through LA
        img = img.convert("LA")
    if img.mode in ("RGBA", "RGBa", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def _stretch_to_l(img: Image.Image) -> Image.Image:
    """A 16-bit / 32-bit / float image as 8-bit gray, min..max stretched to 0..255.

    Done in bands of rows: besides the decoded image, one copy in its own width (2 bytes a
    pixel for 16-bit) and the 8-bit result, never a float64 copy of the whole image.
    """
    arr = np.asarray(img)
    lo, hi = float(arr.min()), float(arr.max())
    out = np.zeros(arr.shape, dtype=np.uint8)
    if hi > lo:
        scale = 255.0 / (hi - lo)
        for top in range(0, arr.shape[0], _BAND_ROWS):
            band = arr[top:top + _BAND_ROWS].astype(np.float64)
            out[top:top + _BAND_ROWS] = ((band - lo) * scale).astype(np.uint8)
    return Image.fromarray(out, "L")


def load_image(image: ImageInput, *, max_pixels: int = MAX_PIXELS, shorter_side: int | None = None,
               draft: tuple[int, int] | None = None) -> Image.Image:
    """Open a path, bytes, file object or PIL image as an upright RGB image.

    `shorter_side`: decode no larger than a model needs. JPEGs are decoded at 1/2..1/8 scale
    (Pillow's `draft`, in the DCT: the full-size pixels never exist) and any image whose
    shorter side is longer is box-averaged down to it before the mode conversion, so a
    64-megapixel 16-bit PNG costs its decoded buffer once, briefly (`decoded_size` says
    how large that buffer will be). `draft=(w, h)` sets only the decoder's scale: JPEGs at the
    smallest 1/2..1/8 scale still at least that size, other formats at full size, nothing
    box-averaged (thumbnails, which scale themselves); it overrides the scale `shorter_side` picks.

    Raises ImageError naming the file for: missing, empty, not an image, truncated,
    too large (checked from the header before any pixel is decoded), or an
    unsupported format such as HEIC without the `pillow-heif` plugin.
    """
    name = describe(image)
    if isinstance(image, Image.Image):
        _check_size(image, name, max_pixels)
        img = image
    else:
        img = _decode(image, name, max_pixels, draft=draft if draft is not None else _draft(shorter_side))
    if shorter_side:
        img = _shrink(img, shorter_side, name)
    return _to_rgb_checked(img, name)


def decoded_size(image: str | Path | bytes | BinaryIO, *, max_pixels: int = MAX_PIXELS,
                 shorter_side: int | None = None) -> tuple[int, int]:
    """(width, height) at which `load_image` with the same settings decodes `image`, before any
    box-averaging: the full size, or a JPEG's reduced `draft` size. Only the header is read;
    files `load_image` refuses from their header raise the same ImageError here."""
    name = describe(image)
    img = _decode(image, name, max_pixels, draft=_draft(shorter_side), header_only=True)
    try:
        return img.size
    finally:
        img.close()


def _draft(shorter_side: int | None) -> tuple[int, int] | None:
    return (shorter_side, shorter_side) if shorter_side else None


class PixelBudget:
    """Pixels a group of photos (one app request) may decode in all, on top of each photo's own limit.

    Meant to be counted with `decoded_size`, i.e. what is really decoded: 32 phone JPEGs cost
    little, 32 near-limit PNGs (each decoded at full size) use it up after a few.
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"a pixel budget must be > 0, got {limit}")
        self.limit = limit
        self.used = 0

    def take(self, pixels: int, name: str) -> None:
        """Count `pixels` for the photo `name`, or refuse it (ImageError) when they do not fit."""
        if self.used + pixels > self.limit:
            raise ImageError(f"{name}: not decoded: it needs {pixels / 1e6:.3g} megapixels and this request's "
                             f"photos already used {self.used / 1e6:.3g} of the {self.limit / 1e6:.3g} megapixels "
                             "one request may decode; send it in another request (or smaller)")
        self.used += pixels


def _shrink(img: Image.Image, shorter_side: int, name: str) -> Image.Image:
    """Box-average `img` so its shorter side is `shorter_side` (aspect kept); smaller images as they are.

    The EXIF block travels with the result, so `to_rgb` still turns it upright. `Image.reduce`
    refuses 16-bit modes, `resize(BOX)` (the same area average) takes every mode but 1/P,
    which are converted first.
    """
    w, h = img.size
    if min(w, h) <= shorter_side:
        return img
    scale = shorter_side / min(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    try:
        exif = img.getexif()
        source = img
        if img.mode in ("1", "P", "PA"):
            transparent = img.mode == "PA" or "transparency" in img.info
            source = img.convert("L" if img.mode == "1" else "RGBA" if transparent else "RGB")
        small = source.resize(size, Image.Resampling.BOX)
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001 - an odd mode is this image's problem only
        raise ImageError(f"{name}: cannot scale its {img.mode} pixels ({type(exc).__name__}: {exc})") from None
    if len(exif):
        small.info["exif"] = exif.tobytes()
    return small


def verify_image(image: str | Path | bytes | BinaryIO, *, max_pixels: int = MAX_PIXELS) -> None:
    """Decode an image once, the way training will, raising the ImageError `load_image` would.

    Truncated and corrupt files are only found by decoding them; JPEGs are decoded at
    reduced scale (the whole stream is still read, so truncation is still found), which
    makes checking a folder several times faster than loading it.
    """
    name = describe(image)
    img = _decode(image, name, max_pixels, draft=(64, 64))
    try:
        _to_rgb_checked(img, name)
    finally:
        img.close()


def _source(image: ImageInput, name: str) -> BinaryIO | Path:
    """What `Image.open` reads, after the checks that need no decoding."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if path.is_dir():
            raise ImageError(f"{name}: is a folder, not an image file")
        if not path.is_file():
            raise ImageError(f"{name}: file not found")
        _check_bytes(path.stat().st_size, name)
        return path
    if isinstance(image, (bytes, bytearray)):
        _check_bytes(len(image), name)
        return io.BytesIO(image)
    return image


def _check_bytes(size: int, name: str) -> None:
    if size == 0:
        raise ImageError(f"{name}: the file is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{name}: file is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")


def _decode(image: ImageInput, name: str, max_pixels: int, draft: tuple[int, int] | None = None,
            header_only: bool = False) -> Image.Image:
    """Open and decode (`header_only`: open only), refusing oversized images from their header; every
    failure is an ImageError."""
    source = _source(image, name)
    img = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            _check_size(img, name, max_pixels)
            if draft is not None:
                img.draft(None, draft)  # JPEG only: decode at 1/2..1/8 scale; a no-op for other formats
            if not header_only:
                img.load()
        return img
    except ImageError:
        _close(img)
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        _close(img)
        found = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow: "Image size (N pixels) exceeds limit ..."
        size = f"{int(found.group(1)):,} pixels" if found else f"over {max_pixels:,} pixels"
        raise ImageError(f"{name}: image is too large to decode safely ({size}; the limit is {max_pixels:,}: "
                         "a decompression bomb, or a photo to resize first)") from None
    except UnidentifiedImageError:
        raise ImageError(_unidentified_message(name, source)) from None
    except MemoryError:
        _close(img)
        raise ImageError(f"{name}: not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise OSError, SyntaxError, EOFError, struct.error...
        _close(img)
        reason = ("truncated or corrupt" if "truncated" in str(exc).lower()
                  else f"corrupt or cannot be decoded ({type(exc).__name__}: {exc})")
        raise ImageError(f"{name}: image is {reason}") from None


def _close(img: Image.Image | None) -> None:
    if img is not None:
        img.close()


def _to_rgb_checked(img: Image.Image, name: str) -> Image.Image:
    try:
        return to_rgb(img)
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to convert this image") from None
    except Exception as exc:  # noqa: BLE001 - an odd mode or broken EXIF block is this image's problem only
        raise ImageError(f"{name}: cannot convert its {img.mode} pixels to RGB ({type(exc).__name__}: {exc})") from None


def _check_size(img: Image.Image, name: str, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"{name}: image is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,} "
                         "(resize it first)")


def _unidentified_message(name: str, source: object) -> str:
    head = b""
    try:
        if isinstance(source, Path):
            head = source.read_bytes()[:16]
        elif hasattr(source, "seek"):
            source.seek(0)  # type: ignore[union-attr]
            head = source.read(16)  # type: ignore[union-attr]
    except OSError:
        pass
    if Path(name).suffix.lower() in _HEIF_SUFFIXES or b"ftypheic" in head or b"ftypheif" in head \
            or b"ftypmif1" in head:
        return (f"{name}: HEIC/HEIF photos need the 'pillow-heif' package, which this installation lacks "
                "(pip install pillow-heif), or convert the photo to JPEG")
    if head.startswith(b"%PDF"):
        return f"{name}: this is a PDF document, not an image"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"{name}: this is a text file, not an image"
    return f"{name}: not a recognised image format"


def register_heif() -> bool:
    """Enable HEIC reading when the optional `pillow-heif` plugin is installed."""
    try:
        from pillow_heif import register_heif_opener  # type: ignore[import-not-found]
    except ImportError:
        return False
    register_heif_opener()
    return True


register_heif()
