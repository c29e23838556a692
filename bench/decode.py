"""How much do predictions change when photos are decoded down to a few times the model's input?

    python bench/decode.py                       # bundled model, its validation views rendered at 1024 px
    python bench/decode.py --model campus_model --csv campus_split/test.csv --images ../shared/data/campus/images

The Predictor decodes photos to a shorter side of `DECODE_SCALE` x the input size (JPEG `draft`,
then a box average) instead of at full size. For each decode scale (0: full size, the reference)
this prints, as one JSON object: region accuracy, agreement with the full-size decoding, the largest
change of a region probability, the coordinate shift (mean, max) against full-size decoding, and the
decoding time per photo. Without --csv, the bundled model's 60 validation views are rendered again
at --render-px (real detail at that size, not an upscale) from the same synthetic campus.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "assets" / "model", help="model directory")
    p.add_argument("--csv", type=Path, help="labels CSV (default: the bundled validation views, re-rendered)")
    p.add_argument("--images", type=Path, help="image folder of --csv")
    p.add_argument("--render-px", type=int, default=1024, help="side of the re-rendered views (no --csv)")
    p.add_argument("--scales", default="0,8,4,2,1", help="decode scales to compare; 0 = full size (reference)")
    return p


def render_validation(out: Path, px: int) -> tuple[Path, Path]:
    """The bundle's validation views (campus seed 0, view seed 1000) rendered at `px` pixels."""
    from geomodel.synthetic import make_campus, make_dataset

    bundle = json.loads((ROOT / "assets" / "bundle.json").read_text())["settings"]
    plan = make_campus(n_regions=bundle["regions"], seed=bundle["campus_seed"])
    csv = make_dataset(plan, out, n_images=bundle["val_images"], image_size=px, seed=1000 + bundle["campus_seed"],
                       filename_prefix="val", image_format="jpg")
    return csv, out / "images"


def compare(model: Path, csv: Path, images: Path, scales: Sequence[float]) -> list[dict]:
    from geomodel.data.labels import read_labels
    from geomodel.predictor import Predictor

    predictor = Predictor.from_dir(model, device="cpu")
    df = read_labels(csv, num_regions=predictor.num_regions)
    paths = [images / f for f in df["filename"]]
    truth = df["Region_ID"].to_numpy()
    runs = []
    for scale in scales:
        predictor.decode_scale = scale or None
        t0 = time.perf_counter()
        results = predictor.predict(paths)
        seconds = time.perf_counter() - t0
        ok = [r for r in results if r["error"] is None]
        if len(ok) != len(results):
            raise SystemExit(f"decode scale {scale}: {len(results) - len(ok)} photos failed: {results[0]['error']}")
        probs = np.array([r["probs"] for r in ok])
        runs.append({"scale": scale, "decode_side": predictor.decode_side, "seconds_per_photo": seconds / len(ok),
                     "region": np.array([r["region_id"] for r in ok]), "probs": probs,
                     "latlon": np.array([[r["latitude"], r["longitude"]] for r in ok])})
    ref = runs[0]
    out = []
    for run in runs:
        shift = np.hypot(*(run["latlon"] - ref["latlon"]).T)
        out.append({"decode_scale": run["scale"] or "full size", "decode_side": run["decode_side"],
                    "region_accuracy": round(float((run["region"] == truth).mean()), 4),
                    "same_region_as_full": round(float((run["region"] == ref["region"]).mean()), 4),
                    "max_prob_change": round(float(np.abs(run["probs"] - ref["probs"]).max()), 4),
                    "coord_shift_mean": round(float(shift.mean()), 3), "coord_shift_max": round(float(shift.max()), 3),
                    "seconds_per_photo": round(run["seconds_per_photo"], 4)})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    scales = [float(x) for x in args.scales.split(",") if x.strip()]
    if not scales or scales[0] != 0:
        scales = [0.0, *[s for s in scales if s != 0]]  # full size first: the reference
    with tempfile.TemporaryDirectory(prefix="geomodel-decode-") as tmp:
        if args.csv is None:
            csv, images = render_validation(Path(tmp) / "val", args.render_px)
            source = f"bundled validation views rendered at {args.render_px} px"
        else:
            csv, images = args.csv, args.images or args.csv.parent
            source = str(csv)
        from PIL import Image

        sizes = sorted({Image.open(p).size for p in images.iterdir() if p.is_file() and p.suffix != ".csv"})
        rows = compare(args.model, csv, images, scales)
    print(json.dumps({"model": str(args.model), "photos": source, "photo_sizes": [list(s) for s in sizes[:6]],
                      "results": rows, "machine": machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
