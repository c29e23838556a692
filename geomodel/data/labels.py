"""Labels CSV: reading with row-level validation, splitting, outlier filtering, normalisation.

Row numbers in messages are the CSV's own line numbers (header = line 1), so a
user can jump straight to the line in an editor.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from geomodel.errors import DataError

REQUIRED_COLUMNS = ("filename", "latitude", "longitude", "Region_ID")
OPTIONAL_COLUMNS = ("timestamp", "angle", "pred_Region_ID")
# Names other tools use for the required columns, offered as "rename it" hints.
_ALIASES = {
    "filename": ("file", "file_name", "image", "image_name", "img", "name", "path", "photo"),
    "latitude": ("lat", "y", "northing"),
    "longitude": ("lon", "lng", "long", "x", "easting"),
    "Region_ID": ("region", "region_id", "regionid", "region id", "label", "class", "zone"),
}
_MAX_LISTED = 5
# Beyond this a coordinate means no place in any unit (1e15 mm is 6.7 times the Earth-Sun distance); such
# values come from broken exports, and squared errors of values near 1e154 overflow the metrics to inf.
MAX_ABS_COORD = 1e15
_WGS84_RANGE = {"latitude": 90.0, "longitude": 180.0}


def _line(index: int) -> int:
    return int(index) + 2  # 0-based data row -> 1-based line counting the header


def list_rows(csv: str | Path, rows: Iterable[int], what: str) -> str:
    """`CSV: WHAT on line(s) ...` for 0-based data rows (the first five, then how many more)."""
    rows = list(rows)
    shown = ", ".join(str(_line(r)) for r in rows[:_MAX_LISTED])
    more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
    return f"{csv}: {what} on line{'s' if len(rows) > 1 else ''} {shown}{more}"


def _shown(value: object) -> str:
    """A cell as the user wrote it, for messages (never numpy's `np.float64(nan)`)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "a blank cell"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(str(value))


def read_labels(csv: str | Path, *, num_regions: int | None = None, need_region: bool = True,
                frame: str | None = None) -> pd.DataFrame:
    """Read and validate a labels CSV.

    Returns a frame with the CSV's columns plus `region` (0-based) and `row`
    (the 0-based data row, kept through filtering for messages and exclusions).
    Raises DataError naming the file, line and column for every kind of bad input,
    coordinates that cannot mean a place included: beyond +-90 / +-180 degrees when
    `frame` is "wgs84", beyond `MAX_ABS_COORD` in any frame.
    """
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(f"labels CSV not found: {csv}")
    try:
        df = pd.read_csv(csv, dtype={"filename": str}, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv}: the file is empty (expected a header {','.join(REQUIRED_COLUMNS)})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv}: not a readable CSV ({str(exc).strip()})") from None
    df.columns = [str(c).strip() for c in df.columns]
    required = REQUIRED_COLUMNS if need_region else REQUIRED_COLUMNS[:3]
    missing = [c for c in required if c not in df.columns]
    if missing:
        hints = []
        for col in missing:
            close = difflib.get_close_matches(col, df.columns, n=1, cutoff=0.6)
            close = close or [c for c in df.columns if c.lower() in (col.lower(), *_ALIASES[col])]
            hints.append(f"{col!r}" + (f" (found {close[0]!r}: rename it)" if close else ""))
        separator = next((sep for sep in (";", "\t", "|") if len(df.columns) == 1 and sep in df.columns[0]), None)
        advice = f"; the file seems to be separated by {separator!r}: save it with commas" if separator else ""
        raise DataError(f"{csv}: missing required column(s) {', '.join(hints)}; "
                        f"columns present: {', '.join(map(repr, df.columns))}{advice}")
    if df.empty:
        raise DataError(f"{csv}: no data rows under the header")
    df = df.reset_index(drop=True)
    df["row"] = np.arange(len(df))

    blank = df["filename"].isna() | (df["filename"].astype(str).str.strip() == "")
    if blank.any():
        raise DataError(list_rows(csv, df.index[blank], "blank filename"))
    df["filename"] = df["filename"].astype(str).str.strip()
    dup = df["filename"].duplicated(keep=False)
    if dup.any():
        first = df.loc[dup, "filename"].iloc[0]
        raise DataError(list_rows(csv, df.index[dup], f"duplicate filename (e.g. {first!r})"))

    for col in ("latitude", "longitude"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            example = df.loc[bad, col].iloc[0]
            raise DataError(list_rows(csv, df.index[bad], f"column {col!r} is blank, NaN or not a number "
                                       f"(e.g. {_shown(example)})"))
        df[col] = values.astype(np.float64)
        _check_coordinate_range(csv, df, col, frame)

    if "angle" in df.columns:
        df["angle"] = pd.to_numeric(df["angle"], errors="coerce")

    if need_region:
        df["Region_ID"] = _check_region_column(csv, df, "Region_ID", num_regions)
        df["region"] = df["Region_ID"] - 1
    if "pred_Region_ID" in df.columns:
        if df["pred_Region_ID"].isna().all():
            df = df.drop(columns=["pred_Region_ID"])
        else:
            df["pred_Region_ID"] = _check_region_column(csv, df, "pred_Region_ID", num_regions)
    return df


def _check_coordinate_range(csv: Path, df: pd.DataFrame, col: str, frame: str | None) -> None:
    values = df[col].to_numpy(np.float64)
    limit, why = MAX_ABS_COORD, "no place in any unit"
    if frame == "wgs84":
        limit, why = _WGS84_RANGE[col], "not a WGS84 position in degrees"
    bad = np.abs(values) > limit
    if bad.any():
        raise DataError(list_rows(csv, df.index[bad], f"column {col!r} is outside -{limit:g}..{limit:g} "
                                   f"(e.g. {_shown(values[bad][0])}: {why})"))


def _check_region_column(csv: Path, df: pd.DataFrame, col: str, num_regions: int | None) -> pd.Series:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() | (values != np.round(values))
    if bad.any():
        raise DataError(list_rows(csv, df.index[bad], f"column {col!r} is not a whole number "
                                   f"(e.g. {_shown(df.loc[bad, col].iloc[0])})"))
    values = values.astype(np.int64)
    upper = num_regions if num_regions is not None else int(values.max())
    bad = (values < 1) | (values > upper)
    if bad.any():
        raise DataError(list_rows(csv, df.index[bad], f"column {col!r} is outside 1..{upper} "
                                   f"(e.g. {int(values[bad].iloc[0])}); region ids are 1-based"))
    return values


def check_regions_present(csv: str | Path, train: pd.DataFrame, num_regions: int, *,
                          explicit: bool) -> list[str]:
    """Every region 1..`num_regions` must have training photos: a model cannot learn an empty class,
    and one stray id (a 99 among 1..3) would silently make a 99-region model.

    With `explicit` (the user set --num-regions) empty regions are allowed and each gets a
    warning, returned for the caller to print; otherwise they are a DataError naming the line
    of the largest id.
    """
    counts = np.bincount(train["Region_ID"].to_numpy(np.int64) - 1, minlength=num_regions)[:num_regions]
    empty = [r + 1 for r in np.flatnonzero(counts == 0)]
    if not empty:
        return []
    if explicit:
        return [f"{csv}: region {r} of {num_regions} has no training photos; the model will never predict it"
                for r in empty]
    top = int(train["Region_ID"].max())
    line = _line(int(train.loc[train["Region_ID"] == top, "row"].iloc[0]))
    raise DataError(f"{csv}: region ids must run 1..N with every region in the training data, but "
                    f"{_ranges(empty)} {'has' if len(empty) == 1 else 'have'} no training photos (the largest "
                    f"id, {top}, is on line {line}); renumber the regions, or pass --num-regions {num_regions} "
                    "to train with empty regions")


def _ranges(ids: Sequence[int]) -> str:
    """[2, 3, 4, 7] -> 'regions 2-4, 7'."""
    spans, start, prev = [], ids[0], ids[0]
    for cur in [*ids[1:], None]:
        if cur != prev + 1:
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
        prev = cur if cur is not None else prev
    return ("region " if len(ids) == 1 else "regions ") + ", ".join(spans)


def check_region_count(csv: str | Path, df: pd.DataFrame, num_regions: int) -> None:
    """Refuse labels whose region ids exceed what a model was trained with."""
    if int(df["Region_ID"].max()) > num_regions:
        bad = df.index[df["Region_ID"] > num_regions]
        raise DataError(list_rows(Path(csv), bad, f"Region_ID above {num_regions}, the number of regions "
                                   "the model was trained with"))


def apply_exclusions(df: pd.DataFrame, exclude: Sequence[str | int]) -> pd.DataFrame:
    """Drop rows named by filename or by 0-based data-row index (the original work's explicit list)."""
    if not exclude:
        return df
    names = {str(e) for e in exclude}
    rows = {int(e) for e in names if str(e).isdigit()}
    keep = ~(df["filename"].isin(names) | df["row"].isin(rows))
    return df.loc[keep].reset_index(drop=True)


def stratified_pick(regions: np.ndarray, fraction: float, rng: np.random.Generator, *,
                    singletons: bool = True) -> np.ndarray:
    """Indices of round(fraction * n) rows of each region (at least 1), in region order.

    Regions in ascending order, each region's rows permuted by `rng`. `singletons=False`
    picks nothing from a region with a single row (its permutation is still drawn).
    """
    picked: list[int] = []
    for region in np.unique(regions):
        idx = np.flatnonzero(regions == region)
        perm = rng.permutation(idx)
        if len(idx) < 2 and not singletons:
            continue
        picked.extend(perm[: max(1, round(fraction * len(idx)))].tolist())
    return np.asarray(picked, dtype=np.int64)


def stratified_split(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into (kept, held_out), holding out round(fraction * n) photos of each region (at least 1).

    Deterministic: regions in ascending order, each region's rows in their current
    order permuted by one `numpy.random.default_rng(seed)`. A region with a single
    photo stays entirely in `kept`.
    """
    held = stratified_pick(df["region"].to_numpy(), fraction, np.random.default_rng(seed), singletons=False)
    mask = np.zeros(len(df), dtype=bool)
    mask[held] = True
    return df.loc[~mask].reset_index(drop=True), df.loc[mask].reset_index(drop=True)


@dataclass
class CoordStats:
    """Training-split statistics: normalisation and the outlier bounds."""

    mean: tuple[float, float]  # (lat, lon)
    std: tuple[float, float]
    low: tuple[float, float]  # percentile bounds used to drop outliers
    high: tuple[float, float]

    @classmethod
    def fit(cls, df: pd.DataFrame, low_pct: float = 1.0, high_pct: float = 99.0) -> "CoordStats":
        """Fit bounds on `df`, then mean/std on the rows inside them."""
        ll = df[["latitude", "longitude"]].to_numpy(np.float64)
        low = np.percentile(ll, low_pct, axis=0)
        high = np.percentile(ll, high_pct, axis=0)
        inside = ll[np.all((ll >= low) & (ll <= high), axis=1)]
        inside = inside if len(inside) else ll
        std = inside.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return cls(tuple(inside.mean(axis=0).tolist()), tuple(std.tolist()), tuple(low.tolist()),
                   tuple(high.tolist()))

    def inliers(self, df: pd.DataFrame) -> np.ndarray:
        ll = df[["latitude", "longitude"]].to_numpy(np.float64)
        return np.all((ll >= np.asarray(self.low)) & (ll <= np.asarray(self.high)), axis=1)

    def normalize(self, latlon: np.ndarray) -> np.ndarray:
        return (np.asarray(latlon, np.float64) - np.asarray(self.mean)) / np.asarray(self.std)

    def denormalize(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, np.float64) * np.asarray(self.std) + np.asarray(self.mean)


def drop_outliers(df: pd.DataFrame, stats: CoordStats, csv: str | Path = "training data") -> pd.DataFrame:
    """Keep rows inside the percentile bounds; an empty result is an error.

    A region whose every photo lies outside the bounds while other regions keep theirs (a small
    region at the campus edge) keeps its photos: dropping them all would leave a class the model
    can never predict.
    """
    keep = stats.inliers(df)
    if "region" in df and keep.any():  # (nothing left at all is an error, below)
        regions = df["region"].to_numpy()
        for region in np.unique(regions):
            sel = regions == region
            if not keep[sel].any():
                keep = keep | sel
    out = df.loc[keep].reset_index(drop=True)
    if out.empty:
        raise DataError(f"{csv}: no rows left after dropping coordinate outliers "
                        f"(bounds lat {stats.low[0]:g}..{stats.high[0]:g}, lon {stats.low[1]:g}..{stats.high[1]:g})")
    return out


def _per_region(df: pd.DataFrame, num_regions: int, stat) -> np.ndarray:
    """(R, 2) `stat` (np.mean, np.std) of lat/lon per region; regions without photos get the overall one."""
    ll = df[["latitude", "longitude"]].to_numpy(np.float64)
    out = np.tile(stat(ll, axis=0), (num_regions, 1))
    regions = df["region"].to_numpy()
    for r in range(num_regions):
        sel = regions == r
        if sel.any():
            out[r] = stat(ll[sel], axis=0)
    return out


def region_centroids(df: pd.DataFrame, num_regions: int) -> np.ndarray:
    """(R, 2) mean lat/lon per region; regions without photos get the overall mean."""
    return _per_region(df, num_regions, np.mean)


def region_spreads(df: pd.DataFrame, num_regions: int, floor: float = 0.1) -> np.ndarray:
    """(R, 2) standard deviation of lat/lon per region, at least `floor` x the overall one.

    The floor keeps regions with one photo (or a line of photos) from having no extent;
    regions without photos get the overall spread.
    """
    overall = df[["latitude", "longitude"]].to_numpy(np.float64).std(axis=0)
    return np.maximum(_per_region(df, num_regions, np.std), floor * overall)


def neighbour_targets(centroids: np.ndarray, frame: str, smoothing: float) -> np.ndarray:
    """(R, R) soft training targets: row t keeps 1 - `smoothing` on region t and spreads `smoothing`
    over the other regions by a Gaussian of the distance between centroids (sigma: the median
    distance from a region to its nearest neighbour), so confusing neighbours costs less than
    confusing regions across campus."""
    from geomodel.geo import distance

    r = len(centroids)
    d = distance(frame, centroids[:, None, 0], centroids[:, None, 1], centroids[None, :, 0], centroids[None, :, 1])
    off = ~np.eye(r, dtype=bool)
    sigma = max(float(np.median(np.where(off, d, np.inf).min(axis=1))), 1e-9)
    # normalised per row in log space: a region far from all others still gives its share to the
    # nearest ones (exp of a large negative number alone would underflow to a row of zeros)
    logits = np.where(off, -0.5 * (d / sigma) ** 2, -np.inf)
    kernel = np.exp(logits - logits.max(axis=1, keepdims=True))
    kernel /= kernel.sum(axis=1, keepdims=True)
    return (1 - smoothing) * np.eye(r) + smoothing * kernel
