"""App settings: one dataclass, filled from command-line flags with environment-variable defaults.

Every flag has an environment variable (`--model` <- GEOMODEL_MODEL_DIR, `--port` <- PORT, ...),
so a hosted Space is configured without editing code. With no settings at all the app serves the
bundled synthetic demo from `assets/`. The model, validation set and examples may also be `hf://`
URLs: `geomodel.hub` downloads them into the Hugging Face cache before anything loads.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from geomodel.hub import (HubSettings, Resolved, images_beside, is_hub_url, resolve_dataset_file,
                          resolve_dataset_folder, resolve_model)

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
BUNDLED_MODEL = ASSETS / "model"
BUNDLED_VAL_CSV = ASSETS / "val" / "labels.csv"
BUNDLED_EXAMPLES = ASSETS / "examples"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

# flag -> (environment variable, default, help)
_ENV = {
    "model": ("GEOMODEL_MODEL_DIR", None, "model directory (region.pt + coords.pt), or a model repo on the Hub: "
              "hf://OWNER/NAME[@REVISION]; default: the bundled demo"),
    "val_csv": ("GEOMODEL_VAL_CSV", None, "labelled CSV for the Validation explorer, or "
                "hf://datasets/OWNER/NAME[@REVISION]/PATH (default: the bundled one with the bundled model, "
                "none otherwise)"),
    "val_images": ("GEOMODEL_VAL_IMAGES", None, "folder of the validation photos, or hf://datasets/... (default: "
                   "images/ beside the CSV, else the CSV's folder)"),
    "plan": ("GEOMODEL_PLAN", None, "plan.json (bounds) with plan.png beside it, drawn under planar maps "
             "(default: MODEL/plan.json when present)"),
    "examples": ("GEOMODEL_EXAMPLES", None, "folder of example photos, or hf://datasets/... (default: the "
                 "bundled ones with the bundled model)"),
    "host": ("GRADIO_SERVER_NAME", "127.0.0.1", "address to listen on (0.0.0.0 to serve the network)"),
    "port": ("PORT", "7860", "port to listen on (also read from GRADIO_SERVER_PORT)"),
    "max_files": ("GEOMODEL_MAX_FILES", "32", "most photos accepted in one request"),
    "max_file_size": ("GEOMODEL_MAX_FILE_SIZE", "10mb", "largest accepted upload, e.g. 10mb"),
    "max_request_megapixels": ("GEOMODEL_MAX_REQUEST_MEGAPIXELS", "256", "megapixels one request may decode "
                               "(JPEGs count at their reduced decoding size); photos past it are refused"),
    "concurrency": ("GEOMODEL_CONCURRENCY", "1", "photos processed at once; requests take turns photo by photo"),
    "queue_size": ("GEOMODEL_QUEUE_SIZE", "16", "requests allowed to wait; more are refused"),
    "threads": ("GEOMODEL_THREADS", None, "torch CPU threads (default: torch's choice)"),
    "device": ("GEOMODEL_DEVICE", "auto", "auto, cpu or cuda[:N]"),
}

_OUTSIDE_VAR = "GEOMODEL_ALLOW_OUTSIDE_IMAGES"


@dataclass
class AppConfig:
    """Everything the app needs to start; see `get_args_parser` for the matching flags."""

    model: Path = BUNDLED_MODEL  # model directory
    val_csv: Path | None = None  # Validation explorer labels (None: no explorer)
    val_images: Path | None = None
    plan: Path | None = None  # plan.json; the image is plan.png beside it (or its "image" key)
    examples: list[Path] | None = None  # example photos for the Predict tab
    host: str = "127.0.0.1"
    port: int = 7860
    max_files: int = 32  # photos per request
    max_file_size: int = 10 * 2**20  # bytes per upload
    max_request_pixels: int = 256_000_000  # pixels decoded per request (see geomodel.data.images.PixelBudget)
    concurrency: int = 1  # predictions running at once: a 2-vCPU Space gains nothing from more
    queue_size: int = 16  # waiting requests; more get "queue full"
    threads: int | None = None
    device: str = "auto"
    sources: dict[str, str] = field(default_factory=dict)  # settings given as hf:// URLs: name -> URL (commit)
    allow_outside_images: bool = False  # validation CSV rows may name files outside val_images

    def __post_init__(self) -> None:
        for name in ("max_files", "max_file_size", "max_request_pixels", "concurrency", "queue_size", "port"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be > 0, got {self.threads!r}")
        if (self.val_csv is None) != (self.val_images is None):
            raise ValueError("give both val_csv and val_images, or neither")

    @property
    def is_bundled(self) -> bool:
        return self.model.resolve() == BUNDLED_MODEL.resolve()


def parse_size(text: str | int) -> int:
    """`10mb` / `512kb` / `1048576` -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*", str(text).lower())
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 10mb, 512kb or a number of bytes)")
    return int(float(m.group(1)) * {"b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30}[m.group(2) or "b"])


def get_args_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """Flags of `python app.py`; each defaults to its environment variable, then to the demo."""
    env = os.environ if env is None else env
    p = argparse.ArgumentParser(prog="python app.py", description="Serve the geomodel demo app.")
    for name, (var, default, text) in _ENV.items():
        value = env.get(var) or (env.get("GRADIO_SERVER_PORT") if name == "port" else None) or default
        p.add_argument("--" + name.replace("_", "-"), default=value, help=f"{text} [env {var}]")
    p.add_argument("--allow-outside-images", action="store_true",
                   default=env.get(_OUTSIDE_VAR, "").strip().lower() in ("1", "true", "yes"),
                   help="let the validation CSV name files outside --val-images (../ paths, absolute paths, links "
                        f"pointing elsewhere); refused by default [env {_OUTSIDE_VAR}=1]")
    return p


def config_from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> AppConfig:
    """Parse flags (with environment defaults) into a checked `AppConfig`."""
    a = get_args_parser(env).parse_args(argv)
    hub = HubSettings.from_env(env)
    fetched: dict[str, Resolved] = {}  # settings given as hf:// URLs, downloaded into the Hub cache

    def local(name: str, resolve: Callable[[str, HubSettings], Resolved]) -> Path | None:
        value = getattr(a, name)
        if is_hub_url(value):
            fetched[name] = resolve(value, hub)
            return fetched[name].path
        return Path(value) if value else None

    model = local("model", resolve_model) or BUNDLED_MODEL
    bundled = model.resolve() == BUNDLED_MODEL.resolve()
    val_csv = local("val_csv", resolve_dataset_file) or (BUNDLED_VAL_CSV if bundled else None)
    val_images = local("val_images", resolve_dataset_folder)
    if val_images is None and "val_csv" in fetched:
        fetched["val_images"] = images_beside(fetched["val_csv"], hub)
        val_images = fetched["val_images"].path
    elif val_images is None and val_csv is not None:
        val_images = _images_beside(val_csv)
    plan = Path(a.plan) if a.plan else (model / "plan.json" if (model / "plan.json").is_file() else None)
    examples_dir = local("examples", resolve_dataset_folder) or (BUNDLED_EXAMPLES if bundled else None)
    return AppConfig(model=model, val_csv=val_csv, val_images=val_images, plan=plan,
                     examples=list_images(examples_dir) if examples_dir else None, host=a.host, port=int(a.port),
                     max_files=int(a.max_files), max_file_size=parse_size(a.max_file_size),
                     max_request_pixels=int(float(a.max_request_megapixels) * 1_000_000),
                     concurrency=int(a.concurrency), queue_size=int(a.queue_size),
                     threads=int(a.threads) if a.threads else None, device=a.device,
                     sources={name: got.describe() for name, got in fetched.items()},
                     allow_outside_images=a.allow_outside_images)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (none if it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_plan(path: Path):
    """A `PlanOverlay` from plan.json (`bounds`, optional `image`, default plan.png beside it);
    a DataError naming the file when it is not a plan."""
    from demo.maps import PlanOverlay
    from geomodel.plan import read_plan

    plan = read_plan(path)
    return PlanOverlay(image=path.parent / plan.image, bounds=plan.bounds)


def _images_beside(csv: Path) -> Path:
    return csv.parent / "images" if (csv.parent / "images").is_dir() else csv.parent
