"""`python -m train check MODEL_DIR`: is a model directory complete and loadable, how big, what it learnt.

MODEL_DIR may also be `hf://OWNER/NAME[@REVISION]`: the app's files are downloaded (or read from the
Hugging Face cache) exactly as the app does, through `geomodel.hub`. Exit status: 0 complete and
loadable, 1 not (every reason printed), 2 unusable argument (no such folder, a Hub error).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path

from geomodel.hub import APP_FILES, REQUIRED_FILES, is_hub_url

# A Space (or any Hub repo) pushed with plain git refuses files over 10 MiB: they need Git LFS or Xet.
# Sources: https://huggingface.co/docs/hub/repositories-getting-started#terminal ("Do you have files larger
# than 10MB? Those files should be tracked with git-lfs") and the Hub's answer to such a push ("Your push was
# rejected because it contains files larger than 10 MiB"). `hf upload` sends large files through LFS/Xet itself.
SPACE_FILE_LIMIT = 10 * 2**20
LIMIT_SOURCE = "https://huggingface.co/docs/hub/repositories-getting-started#terminal"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory, or hf://OWNER/NAME[@REVISION] (a model repo on the Hub)")
    p.add_argument("--device", default="cpu", help="device to test-load the model on")


def file_role(name: str) -> str:
    """What a model directory's file is for, as the app and `hf download` see it."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in APP_FILES):
        return "served"
    if name.endswith("_last.pt"):
        return "resume checkpoint, not needed to serve"
    if name.endswith("_history.csv") or name == "args.json":
        return "training record, not needed to serve"
    return "not used by the app"


def inspect(model_dir: Path, *, device: str = "cpu") -> dict:
    """Files (name, bytes, role), problems that make the directory incomplete, warnings, and the model's info."""
    from geomodel.errors import GeomodelError
    from geomodel.predictor import Predictor

    files = [(p.relative_to(model_dir).as_posix(), p.stat().st_size) for p in sorted(model_dir.rglob("*"))
             if p.is_file()]
    names = {name for name, _ in files}
    missing = [name for name in REQUIRED_FILES if name not in names]
    problems = [f"{name} is missing" for name in missing] + _plan_problems(model_dir, names)
    warnings = [f"{name} is {size / 2**20:.1f} MB, over the 10 MiB a Space or other Hub repo takes through a plain "
                "`git push`: track it with Git LFS (`git lfs track \"*.pt\"`) or upload with `hf upload`, which "
                f"stores large files with LFS/Xet itself (limit: {LIMIT_SOURCE})"
                for name, size in files if size > SPACE_FILE_LIMIT]
    info = None
    if not missing:
        try:
            predictor = Predictor.from_dir(model_dir, device=device)
            info = predictor.info()
        except GeomodelError as exc:
            problems.append(f"does not load: {exc}")
    hold_out = _json(model_dir / "region_metrics.json").get("val_size")
    return {"files": [{"name": n, "bytes": s, "role": file_role(n)} for n, s in files], "problems": problems,
            "warnings": warnings, "info": info, "hold_out_size": hold_out}


def report_lines(model_dir: Path, result: dict, source: str | None = None) -> list[str]:
    """The report `run_check` prints."""
    lines = [f"model directory: {source or model_dir}" + (f"\n  cached at {model_dir}" if source else "")]
    width = max([len(f["name"]) for f in result["files"]] + [10])
    for f in result["files"]:
        lines.append(f"  {f['name']:<{width}}  {_size(f['bytes']):>9}  {f['role']}")
    total = sum(f["bytes"] for f in result["files"])
    served = sum(f["bytes"] for f in result["files"] if f["role"] == "served")
    lines.append(f"  total {_size(total)}; the app needs {_size(served)} of it")
    info = result["info"]
    if info is not None:
        lines.append("loads with Predictor: yes")
        hold_out = f" (hold-out {result['hold_out_size']:,})" if result["hold_out_size"] else ""
        names = ", ".join(f"{i + 1} {n}" for i, n in enumerate(info.region_names))
        lines.append(f"trained on: {info.train_size:,} photos{hold_out}; {len(info.region_names)} regions: {names}")
        frame = "WGS84 latitude/longitude (errors in metres)" if info.frame == "wgs84" else \
            f"planar (errors in {info.error_unit})"
        backbone = info.backbones["region"] + (" (shared by both stages)" if info.layout == "shared" else
                                               f" (regions), {info.backbones['coords']} (coordinates)")
        lines.append(f"  frame: {frame}; backbone: {backbone}; input {info.image_size} px")
        lines.append("  region polygons: " + (info.region_polygons or "none (no regions.geojson: a model directory "
                                                   "from before models carried them; the maps draw no outlines)"))
        metrics = _metrics_text(info.metrics, info.error_unit)
        if metrics:
            lines.append(f"  hold-out metrics: {metrics}")
    for problem in result["problems"]:
        lines.append(f"problem: {problem}")
    for warning in result["warnings"]:
        lines.append(f"warning: {warning}")
    lines.append("complete: " + ("yes" if not result["problems"] else "no"))
    return lines


def run_check(args: argparse.Namespace) -> int:
    from geomodel.errors import GeomodelError

    source = None
    if is_hub_url(args.model):
        from geomodel.hub import NotAModelError, resolve_model

        try:
            got = resolve_model(args.model)
        except NotAModelError as exc:  # the repo is there but holds no model directory: incomplete
            print(f"problem: {exc}\ncomplete: no")
            return 1
        model_dir, source = got.path, got.describe()
    else:
        model_dir = Path(args.model)
        if not model_dir.is_dir():
            raise GeomodelError(f"{model_dir}: no such model directory")
    result = inspect(model_dir, device=args.device)
    print("\n".join(report_lines(model_dir, result, source)))
    return 0 if not result["problems"] else 1


# ------------------------------------------------------------------------------------ helpers


def _plan_problems(model_dir: Path, names: set[str]) -> list[str]:
    """The app draws plan.json's image under planar maps: both must be usable when plan.json is there."""
    from geomodel.errors import DataError
    from geomodel.plan import PLAN_FILE, read_plan

    if PLAN_FILE not in names:
        return []
    try:
        image = read_plan(model_dir / PLAN_FILE).image
    except DataError as exc:
        return [str(exc)]
    return [] if image in names else [f"plan.json draws {image}, which is missing"]


def _metrics_text(metrics: dict, unit: str) -> str:
    reg, crd = metrics.get("region", {}), metrics.get("coords", {})
    parts = []
    if "accuracy" in reg:
        parts.append(f"region accuracy {reg['accuracy']:.1%}")
    if "median_error" in crd:
        parts.append(f"median error {crd['median_error']:,.1f} {unit}")
    if "coord_mse" in crd:
        parts.append(f"coordinate MSE {crd['coord_mse']:,.1f} {unit}²")
    return ", ".join(parts)


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"
