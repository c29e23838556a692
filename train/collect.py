"""`python -m train collect PATH... --out OUT`: a labelled collection from photos, walk videos and CSVs.

Argument parsing and printing only; the work is `geomodel.collect` and `geomodel.regions`.
"""
from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta
from pathlib import Path

MAX_LISTED = 20  # left-out inputs printed; summary.json lists them all


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `collect` subcommand."""
    p = sub.add_parser("collect", help="build a labelled collection (images/, labels.csv, regions.geojson, map) "
                       "from geotagged photos, walk videos with their GPS tracks, or a CSV without regions",
                       description="Photos get their position from EXIF GPS, else from --gpx tracks at their "
                       "capture time; video frames from the tracks at their time. Regions come from --regions "
                       "or are made with --auto-regions K.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="photos, folders of photos, videos, or CSVs with filename,latitude,longitude (mixed)")
    p.add_argument("--out", required=True, type=Path, help="collection folder to write (must not exist)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (only once the new collection is complete)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--regions", type=Path, metavar="FILE.geojson",
                   help="named region polygons (GeoJSON, e.g. drawn on geojson.io); photos outside all are left out")
    g.add_argument("--auto-regions", type=int, metavar="K", help="make K contiguous regions with balanced photo counts")
    p.add_argument("--gpx", type=Path, action="append", default=[], metavar="FILE",
                   help="GPS track recorded during the walk (repeatable); places video frames and photos without GPS")
    p.add_argument("--time-offset", default=None, metavar="OFFSET",
                   help="how far the camera clock runs ahead of UTC (the tracks' clock): +05:30, -7, 90s, "
                        "-0:01:30 (hours unless it ends in s). Default: the photo's own zone tag, else 0")
    p.add_argument("--video-start", action="append", default=[], metavar="[VIDEO=]TIME",
                   help="when a video started, ISO 8601 (UTC unless it carries an offset, e.g. "
                        "2024-05-01T15:30:00+05:30); default: its creation time. VIDEO= limits it to one file")
    every = p.add_mutually_exclusive_group()
    every.add_argument("--every", type=float, default=None, metavar="METRES",
                       help="video: keep a frame every this many metres walked (default 2; none while standing)")
    every.add_argument("--every-seconds", type=float, default=None, metavar="S",
                       help="video: keep a frame every this many seconds instead")
    p.add_argument("--max-gap", type=float, default=60.0, metavar="S",
                   help="no positions between track points more than this many seconds apart")
    p.add_argument("--frame-size", type=int, default=1280, metavar="PX",
                   help="video frames are shrunk to at most this many pixels on their longer side (0: keep)")
    p.add_argument("--frame", choices=("wgs84", "planar"), default="wgs84",
                   help="coordinate frame: wgs84 (GPS degrees) or planar (CSV inputs in any unit)")
    p.add_argument("--images", type=Path, help="CSV inputs: folder of their images (default: images/ beside the CSV)")
    p.add_argument("--partition", default="kd", metavar="METHOD",
                   help="--auto-regions: kd (rectangles at count quantiles, the default) or balanced-kmeans "
                        "(convex cells); README 'Regions' compares them")
    p.add_argument("--seed", type=int, default=0, help="--auto-regions: random seed (balanced-kmeans)")
    p.add_argument("--min-photos", type=int, default=None,
                   help="--auto-regions: fewest photos a region may have (default: the regions library's)")


def parse_offset(text: str) -> timedelta:
    """``+05:30`` / ``-7`` / ``5.5`` (hours) or ``90s`` / ``-1.5s`` (seconds) as a timedelta."""
    t = text.strip()
    m = re.fullmatch(r"([+-]?)(\d+(?:\.\d+)?)s", t)
    if m:
        return timedelta(seconds=float(m.group(2))) * (-1 if m.group(1) == "-" else 1)
    m = re.fullmatch(r"([+-]?)(\d+(?:\.\d+)?)(?::(\d{1,2}))?(?::(\d{1,2}(?:\.\d+)?))?", t)
    if not m or (m.group(3) is not None and "." in m.group(2)):
        raise ValueError(f"--time-offset {text!r}: expected e.g. +05:30, -7, 5.5 (hours) or 90s (seconds)")
    delta = timedelta(hours=float(m.group(2)), minutes=int(m.group(3) or 0), seconds=float(m.group(4) or 0))
    return -delta if m.group(1) == "-" else delta


def parse_video_starts(values: list[str]) -> dict[str, float]:
    """``[VIDEO=]TIME`` values as {video file name or "": epoch seconds}."""
    from geomodel.collect.video import parse_time

    out = {}
    for v in values:
        name, _, when = v.rpartition("=") if "=" in v else ("", "", v)
        t = parse_time(when)
        if t is None:
            raise ValueError(f"--video-start {v!r}: {when!r} is not an ISO 8601 time such as 2024-05-01T10:00:00Z")
        out[Path(name).name if name else ""] = t
    return out


def run_collect(args: argparse.Namespace) -> int:
    from geomodel.collect.collection import (CSV_SUFFIXES, CollectConfig, Collector, assign_regions, expand_inputs,
                                             staging, write_collection)
    from geomodel.collect.tracks import read_tracks
    from geomodel.collect.video import VIDEO_SUFFIXES
    from geomodel.errors import CollectError

    try:
        cfg = CollectConfig(
            frame=args.frame, every_m=None if args.every_seconds else (args.every or 2.0), every_s=args.every_seconds,
            time_offset=parse_offset(args.time_offset) if args.time_offset else None,
            video_start=parse_video_starts(args.video_start), max_gap=args.max_gap,
            max_side=args.frame_size or None, images=args.images)
        if args.auto_regions is not None and args.auto_regions < 2:
            raise ValueError(f"--auto-regions must be at least 2, got {args.auto_regions}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files, left_out = expand_inputs(args.paths)
    csvs = [f for f in files if f.suffix.lower() in CSV_SUFFIXES]
    videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    photos = [f for f in files if f not in csvs and f not in videos]
    if cfg.frame == "planar" and (photos or videos):
        raise CollectError("--frame planar: photos and videos carry GPS degrees; only CSV inputs can be planar "
                           f"(got {len(photos)} photo(s) and {len(videos)} video(s))")
    regions = _read_regions(args.regions, cfg.frame) if args.regions else None  # fail before minutes of work
    tracks, gpx_problems = read_tracks(args.gpx, max_gap=cfg.max_gap)
    for problem in gpx_problems:
        print(f"warning: {problem}; going on without it", file=sys.stderr)

    protect = [*args.paths, *args.gpx, *([args.regions] if args.regions else []), *([args.images] if args.images else [])]
    with staging(args.out, overwrite=args.overwrite, protect=protect) as tmp:
        collector = Collector(tmp / "images", cfg, tracks)
        collector.left_out.extend(left_out)
        if photos:
            collector.add_photos(photos)
        for video in videos:
            collector.add_video(video)
        for csv in csvs:
            collector.add_csv(csv)
        overlap = collector.time_overlap_problem()
        if overlap:
            print(f"warning: {overlap}", file=sys.stderr)
        entries = collector.entries
        if not entries:
            _print_left_out(collector.left_out, None)
            raise CollectError(f"nothing to collect: none of the {len(files)} input file(s) gave a positioned photo "
                               "(reasons above)")
        if regions is None:
            regions = _auto_regions(entries, args.auto_regions, cfg.frame, args)
        source = (str(args.regions) if args.regions else
                  f"--auto-regions {args.auto_regions} (far from all the other photos: a label outlier?)")
        kept, ids, outside = assign_regions(entries, regions, source)
        left = [*collector.left_out, *outside]
        if not kept:
            _print_left_out(left, None)
            raise CollectError(f"{args.regions}: none of the {len(entries)} positioned photos lies inside a region; "
                               "is the GeoJSON in the photos' frame (GeoJSON is [longitude, latitude])?")
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    if k not in ("command",)}
        settings = {k: [str(x) for x in v] if isinstance(v, list) else v for k, v in settings.items()}
        summary = write_collection(tmp, kept, ids, regions, frame=cfg.frame, left_out=left,
                                   settings=settings, videos=collector.videos)
        _write_map(tmp, summary, regions, cfg.frame)
    _print_summary(summary, args.out)
    _print_left_out(left, args.out)
    empty = [r for r in summary["regions"] if r["photos"] == 0]
    for r in empty:
        print(f"warning: region {r['region_id']} ({r['name']!r}) has no photos; training needs photos in every "
              f"region: collect some there, or train with --num-regions {len(summary['regions'])} to keep it empty",
              file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------


def _read_regions(path: Path, frame: str):
    from geomodel.regions import read_regions

    return read_regions(path, frame=frame)


def _auto_regions(entries, k: int, frame: str, args: argparse.Namespace):
    import numpy as np

    from geomodel.regions import auto_regions

    lat = np.array([e.latitude for e in entries])
    lon = np.array([e.longitude for e in entries])
    extra = {} if args.min_photos is None else {"min_photos": args.min_photos}
    _, regions = auto_regions(lat, lon, k, frame=frame, method=args.partition, seed=args.seed, **extra)
    return regions


def _write_map(out: Path, summary: dict, regions, frame: str) -> None:
    import pandas as pd

    from demo.collection import collection_map

    labels = pd.read_csv(out / "labels.csv", dtype={"filename": str})
    html = collection_map(labels, regions, frame=frame, title=f"Collection: {summary['photos']} photos")
    (out / "map.html").write_text(html, encoding="utf-8")


def _print_summary(summary: dict, out: Path) -> None:
    print(f"{summary['photos']} photos in {len(summary['regions'])} regions ({summary['from_photos']} photos, "
          f"{summary['from_video_frames']} video frames; located by EXIF GPS {summary['located_by']['exif']}, "
          f"by GPS track {summary['located_by']['track']}, from CSV {summary['located_by']['csv']})")
    for r in summary["regions"]:
        print(f"  {r['region_id']:>3}  {r['photos']:>6}  {r['name']}")
    print(f"written: {out}/images, labels.csv, regions.geojson, summary.json, map.html "
          f"(train with: python -m train fit --frame {summary['frame']} --csv {out}/labels.csv --images {out}/images "
          f"--regions {out}/regions.geojson --out MODEL ...)")


def _print_left_out(left_out, out: Path | None) -> None:  # LeftOut items
    items = [str(x) for x in left_out]
    if not items:
        return
    print(f"{len(items)} input(s) or part(s) left out:", file=sys.stderr)
    for line in items[:MAX_LISTED]:
        print(f"  {line}", file=sys.stderr)
    if len(items) > MAX_LISTED:
        where = f" (all in {out}/summary.json)" if out else ""
        print(f"  ... and {len(items) - MAX_LISTED} more{where}", file=sys.stderr)
