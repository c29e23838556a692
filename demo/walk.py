"""`python -m demo.walk OUT`: a sample walk session on the synthetic campus, to try `train collect` on.

Writes what a person with a phone brings home from walking the campus: `OUT/photos/` (geotagged
photos, and a few from a camera without GPS), `OUT/videos/walk_<r>.mp4` (a walk filmed in every
region), `OUT/walk.gpx` (the GPS app's track of the session), `OUT/test/` (geotagged photos from
other places, for testing) and `OUT/regions.geojson` (the campus's regions, as if drawn on a map).
Offline, about a minute on 2 cores with the defaults.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.walk", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to write (must not exist)")
    p.add_argument("--regions", type=int, default=6, help="regions of the synthetic campus")
    p.add_argument("--minutes", type=float, default=1.5, help="minutes of walking (and filming) per region")
    p.add_argument("--photos", type=int, default=8, help="geotagged photos per region")
    p.add_argument("--test", type=int, default=10, help="test photos per region")
    p.add_argument("--size", type=int, default=80, help="photo and video frame size in pixels")
    p.add_argument("--fps", type=float, default=4.0, help="video frame rate")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    from geomodel.collect.walk import make_sample
    from geomodel.synthetic import make_campus

    args = get_args_parser().parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out} already exists", flush=True)
        return 2
    plan = make_campus(n_regions=args.regions, seed=args.seed)
    sample = make_sample(args.out, plan, minutes=args.minutes, photos_per_region=args.photos,
                         test_per_region=args.test, size=args.size, fps=args.fps, seed=args.seed, progress=True)
    print(f"written: {sample.photos}/, {sample.videos}/, {sample.gpx}, {sample.test}/, {sample.regions}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
