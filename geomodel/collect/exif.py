"""A photo's position, heading and capture time from its EXIF tags, read (and written) with Pillow.

One reader serves the collection builder (which needs to know *why* a GPS tag is unusable) and
the app (which only wants a position or None, through `exif_gps`). Only the header is read.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

GPS_IFD, EXIF_IFD = 0x8825, 0x8769
_LAT_REF, _LAT, _LON_REF, _LON, _DIR_REF, _DIR = 1, 2, 3, 4, 16, 17
_TAKEN, _DIGITIZED, _OFFSET, _SUBSEC = 0x9003, 0x9004, 0x9011, 0x9291
_EXIF_TIME = "%Y:%m:%d %H:%M:%S"


@dataclass(frozen=True)
class PhotoMeta:
    """What a photo's EXIF says about where, which way and when it was taken."""

    latitude: float | None = None  # degrees, None when there is no usable GPS position
    longitude: float | None = None
    angle: float | None = None  # GPSImgDirection: camera heading, degrees clockwise from north
    taken: datetime | None = None  # DateTimeOriginal (else DateTimeDigitized): the camera's clock, no zone
    utc_offset: timedelta | None = None  # OffsetTimeOriginal, when the camera wrote its zone
    gps_problem: str | None = None  # why GPS tags that are present cannot be used

    @property
    def has_gps(self) -> bool:
        return self.latitude is not None


def read_photo_meta(image: Image.Image | str | Path) -> PhotoMeta:
    """Read GPS position (with its N/S/E/W references), GPSImgDirection and DateTimeOriginal.

    Never raises for bad tags: an unusable GPS position comes back as None with `gps_problem`
    saying why (0,0, out of range, malformed); an unreadable file raises the OSError Pillow does.
    """
    if isinstance(image, Image.Image):
        exif = image.getexif()
    else:
        with Image.open(image) as im:
            exif = im.getexif()
    try:
        gps = dict(exif.get_ifd(GPS_IFD))
    except Exception:  # noqa: BLE001 - a broken GPS IFD is "no GPS"
        gps = {}
    try:
        sub = dict(exif.get_ifd(EXIF_IFD))
    except Exception:  # noqa: BLE001
        sub = {}
    lat, lon, problem = _position(gps)
    taken = _parse_time(sub.get(_TAKEN) or sub.get(_DIGITIZED), sub.get(_SUBSEC))
    return PhotoMeta(latitude=lat, longitude=lon, angle=_direction(gps), taken=taken,
                     utc_offset=parse_utc_offset(sub.get(_OFFSET)), gps_problem=problem)


def exif_gps(image: Image.Image | str | Path) -> tuple[float, float] | None:
    """(latitude, longitude) in degrees from a photo's EXIF GPS tags, or None.

    Malformed, partial, 0/0 or out-of-range tags and unreadable files give None, never an error.
    """
    try:
        meta = read_photo_meta(image)
    except Exception:  # noqa: BLE001 - for the app, a file it cannot read simply has no GPS
        return None
    return (meta.latitude, meta.longitude) if meta.has_gps else None


def check_position(lat: float, lon: float) -> str | None:
    """Why a WGS84 position is unusable (out of range, or 0,0: "no fix"), or None when it is fine."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return "GPS position is not a number"
    if not -90 <= lat <= 90:
        return f"GPS latitude {lat:.6f} is out of range (-90..90)"
    if not -180 <= lon <= 180:
        return f"GPS longitude {lon:.6f} is out of range (-180..180)"
    if lat == 0 and lon == 0:
        return "GPS position is 0,0 (cameras write this when they have no fix)"
    return None


def parse_utc_offset(text: Any) -> timedelta | None:
    """``+05:30`` / ``-07:00`` (EXIF OffsetTime*) as a timedelta; None when absent or malformed."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "ignore")
    m = re.fullmatch(r"\s*([+-])(\d{1,2}):?(\d{2})\s*\x00*", str(text or ""))
    if not m:
        return None
    delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
    return -delta if m.group(1) == "-" else delta


def write_photo_meta(image: Image.Image, path: str | Path, *, latitude: float | None = None,
                     longitude: float | None = None, angle: float | None = None, taken: datetime | None = None,
                     utc_offset: timedelta | None = None, **save: Any) -> Path:
    """Save ``image`` with GPS position, heading and capture time in its EXIF (JPEG, PNG, WebP...).

    Degrees are stored as degrees/minutes/seconds with N/S/E/W references, as cameras do. Any
    EXIF the image already carries is kept. ``save`` goes to `Image.save` (e.g. ``quality=95``).
    """
    exif = image.getexif()
    gps = dict(exif.get_ifd(GPS_IFD))
    if latitude is not None and longitude is not None:
        gps.update({_LAT_REF: "N" if latitude >= 0 else "S", _LAT: _to_dms(abs(latitude)),
                    _LON_REF: "E" if longitude >= 0 else "W", _LON: _to_dms(abs(longitude))})
    if angle is not None:
        gps.update({_DIR_REF: "T", _DIR: float(angle) % 360.0})
    if gps:
        exif[GPS_IFD] = gps
    if taken is not None:
        sub = dict(exif.get_ifd(EXIF_IFD))
        sub[_TAKEN] = taken.strftime(_EXIF_TIME)
        if taken.microsecond:
            sub[_SUBSEC] = f"{taken.microsecond // 10_000:02d}"
        if utc_offset is not None:
            minutes = int(utc_offset.total_seconds() // 60)
            sign, minutes = ("-" if minutes < 0 else "+"), abs(minutes)
            sub[_OFFSET] = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        exif[EXIF_IFD] = sub
    path = Path(path)
    image.save(path, exif=exif, **save)
    return path


# ---------------------------------------------------------------------------------------------


def _position(gps: dict) -> tuple[float | None, float | None, str | None]:
    if _LAT not in gps and _LON not in gps:
        return None, None, None
    try:
        lat = _dms(gps.get(_LAT), gps.get(_LAT_REF), "NS")
        lon = _dms(gps.get(_LON), gps.get(_LON_REF), "EW")
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        return None, None, f"GPS tags are malformed ({exc})"
    if lat is None or lon is None:
        return None, None, "GPS tags are incomplete or have an unknown N/S/E/W reference"
    problem = check_position(lat, lon)
    return (None, None, problem) if problem else (lat, lon, None)


def _dms(value: Any, ref: Any, hemispheres: str) -> float | None:
    if value is None:
        return None
    parts = [float(v) for v in (value if isinstance(value, (tuple, list)) else (value,))]
    if not 1 <= len(parts) <= 3 or not all(math.isfinite(p) for p in parts):
        return None
    degrees = sum(p / 60 ** i for i, p in enumerate(parts))
    ref = ref.decode("ascii", "ignore") if isinstance(ref, bytes) else str(ref or hemispheres[0])
    ref = ref.strip("\x00 ").upper()[:1] or hemispheres[0]
    if ref not in hemispheres:
        return None
    return -degrees if ref == hemispheres[1] else degrees


def _direction(gps: dict) -> float | None:
    try:
        value = float(gps[_DIR])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return value % 360.0 if math.isfinite(value) else None


def _parse_time(text: Any, subsec: Any = None) -> datetime | None:
    if isinstance(text, bytes):
        text = text.decode("ascii", "ignore")
    try:
        taken = datetime.strptime(str(text or "").strip("\x00 "), _EXIF_TIME)
    except ValueError:
        return None
    digits = re.sub(r"\D", "", str(subsec or ""))[:6]
    return taken.replace(microsecond=int(digits.ljust(6, "0"))) if digits else taken



def _to_dms(degrees: float) -> tuple[float, float, float]:
    d = math.floor(degrees)
    m = math.floor((degrees - d) * 60)
    return float(d), float(m), round((degrees - d - m / 60) * 3600, 6)
