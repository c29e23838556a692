"""Pure builders for the Predict tab: result rows in, table / CSV / GeoJSON / map points out.

A *row* is one uploaded photo: the dict `Predictor.predict` returns for it, with `file` set to
the bare file name (shown as text, never as markup) and these keys added:

    gps_latitude, gps_longitude  the photo's EXIF GPS position (wgs84 models only) or None
    gps_error                    distance prediction -> GPS position, in the model's error unit
    thumbnail                    a small data:image/jpeg URI for the map popup, or None
    probs                        every region's probability (region_id order), or None; the map's shading

Rows are plain JSON-able dicts, so they can live in `gr.State` and be rebuilt into any view.
"""
from __future__ import annotations

import io
import statistics
from typing import Any, Sequence

import pandas as pd

from demo.maps import MapPoint
from geomodel.export import write_csv

TABLE_HEADERS = ("File", "Region", "Probability", "Top-k regions", "Latitude", "Longitude", "Heading (°)",
                 "GPS latitude", "GPS longitude", "Error", "Problem")
CSV_FIELDS = ("file", "region_id", "region_name", "region_prob", "top_k", "latitude", "longitude", "heading",
              "gps_latitude", "gps_longitude", "gps_error", "error")
_GPS_COLUMNS = slice(7, 10)  # "GPS latitude" .. "Error" in TABLE_HEADERS


def top_k_text(top_k: Sequence[dict]) -> str:
    """`Library quarter 91% · Science park 6%`: the top-k list as one readable cell."""
    return " · ".join(f"{t['region_name']} {t['prob']:.0%}" for t in top_k)


def results_table(rows: Sequence[dict], error_unit: str = "", *, gps: bool = True) -> pd.DataFrame:
    """One table row per photo, failed photos included with their reason under "Problem".

    `gps=False` (planar models, which never read EXIF GPS) leaves out the three GPS columns;
    the heading column is left out when the model does not predict the camera heading.
    """
    headers = list(TABLE_HEADERS)
    headers[TABLE_HEADERS.index("Error")] = f"Error ({error_unit})" if error_unit else "Error"
    data = []
    for r in rows:
        ok = r.get("error") is None
        data.append([
            r["file"],
            r["region_name"] if ok else "",
            _round(r.get("region_prob"), 3),
            top_k_text(r.get("top_k") or []),
            _round(r.get("latitude"), 6),
            _round(r.get("longitude"), 6),
            _round(r.get("heading"), 0),
            _round(r.get("gps_latitude"), 6),
            _round(r.get("gps_longitude"), 6),
            _round(r.get("gps_error"), 1),
            "" if ok else r["error"],
        ])
    df = pd.DataFrame(data, columns=headers)
    if not any(r.get("heading") is not None for r in rows):
        df = df.drop(columns=["Heading (°)"])
    return df if gps else df.drop(columns=headers[_GPS_COLUMNS])


def to_csv(rows: Sequence[dict]) -> str:
    """All rows as CSV text (failed photos too, with their `error`); top-k as `name:prob;...`.

    Spreadsheet-safe (`geomodel.export`): a file or region name starting with `=`, `+`, `-`, `@`
    is written as text, never as a formula.
    """
    buf = io.StringIO()
    write_csv(buf, CSV_FIELDS, ([_csv_value(r, k) for k in CSV_FIELDS] for r in rows))
    return buf.getvalue()


def _csv_value(row: dict, key: str) -> Any:
    if key == "top_k":
        return ";".join(f"{t['region_name']}:{t['prob']:.4f}" for t in row.get("top_k") or [])
    return row.get(key)


def to_geojson(rows: Sequence[dict], frame: str) -> dict:
    """A GeoJSON FeatureCollection: one Point per predicted photo at `[longitude, latitude]`.

    Photos that could not be read keep their place with `geometry: null` and their `error`.
    RFC 7946 coordinates are WGS84; for a planar model they are the model's own x/y, which the
    collection says in its `frame` member.
    """
    features = []
    for r in rows:
        ok = r.get("error") is None
        props = {k: r.get(k) for k in CSV_FIELDS if k not in ("latitude", "longitude")}
        props["top_k"] = [dict(t) for t in r.get("top_k") or []]
        geometry = {"type": "Point", "coordinates": [r["longitude"], r["latitude"]]} if ok else None
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    return {"type": "FeatureCollection", "frame": frame, "features": features}


def map_points(rows: Sequence[dict]) -> list[MapPoint]:
    """Map points for the photos that got a prediction (with the GPS truth when known)."""
    points = []
    for r in rows:
        if r.get("error") is not None:
            continue
        has_gps = r.get("gps_latitude") is not None
        points.append(MapPoint(
            name=r["file"], lat=r["latitude"], lon=r["longitude"], region=r["region_name"],
            true_lat=r["gps_latitude"] if has_gps else None, true_lon=r["gps_longitude"] if has_gps else None,
            error=r.get("gps_error") if has_gps else None, thumbnail=r.get("thumbnail"),
            extra={"Probability": f"{r['region_prob']:.1%}", "Top-k": top_k_text(r["top_k"])},
            region_values=r.get("probs"),
        ))
    return points


def map_index(rows: Sequence[dict], row: int) -> int:
    """The map point (see `map_points`) of table row `row`; -1 for a photo that is not on the map."""
    if not 0 <= row < len(rows) or rows[row].get("error") is not None:
        return -1
    return sum(r.get("error") is None for r in rows[:row])


def problems_markdown(rows: Sequence[dict]) -> str:
    """A Markdown list of the photos that failed and why; names and reasons are escaped text."""
    bad = [r for r in rows if r.get("error") is not None]
    if not bad:
        return ""
    n_ok = len(rows) - len(bad)
    lines = [f"**{len(bad)} of {len(rows)} photo{'s' if len(rows) != 1 else ''} could not be used** "
             f"({n_ok} got a prediction):"]
    lines += [f"- {code_span(r['file'])}: {escape_markdown(r['error'])}" for r in bad]
    return "\n".join(lines)


def summary_markdown(rows: Sequence[dict], error_unit: str) -> str:
    """One line: how many photos were predicted, and the GPS errors when there are any."""
    ok = [r for r in rows if r.get("error") is None]
    text = f"Predicted {len(ok)} of {len(rows)} photo{'s' if len(rows) != 1 else ''}."
    errors = sorted(r["gps_error"] for r in ok if r.get("gps_error") is not None)
    if errors:
        text += (f" {len(errors)} carried EXIF GPS: median error {statistics.median(errors):,.1f} {error_unit} "
                 f"(lines on the map join each prediction to its GPS position).")
    return text


def escape_markdown(text: Any) -> str:
    """Text that Markdown shows literally: its punctuation backslashed, then & < > as entities."""
    out = "".join("\\" + c if c in "\\`*_{}[]()#+-.!|~" else c for c in str(text))
    return out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code_span(text: str) -> str:
    """Text as a Markdown code span, shown literally (backticks, which would end it, become ')."""
    return "`" + str(text).replace("`", "'") + "`"


# ---------------------------------------------------------------------------------------------


def _round(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)
