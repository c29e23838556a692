"""Self-describing checkpoints: plain types only, atomic writes, safe loading.

A checkpoint is a dict of plain types (tensors, numbers, strings, lists, dicts)
so `torch.load(path, weights_only=True, map_location="cpu")` reads it without
executing anything. Keys:

  format, format_version, kind ("region" | "coords"), model_config, data_config,
  image_size, norm (backbone input mean/std), frame, region_names, num_regions,
  coord_stats (coords only), state_dict, metrics, train_size,
  resume (optional: epoch, optimizer, scheduler, early_stopping, rng, history, train_config)
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geomodel.atomic import atomic_write
from geomodel.errors import CheckpointError

FORMAT = "geomodel-checkpoint"
FORMAT_VERSION = 1


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.

    A crash or kill at any moment leaves either the old file or the new one, never a torn file.
    The temporary file of a writer killed mid-save is removed by the next save of `path`.
    A failed write (disk full, no permission) raises CheckpointError; the old file is kept.
    """
    atomic_write(path, lambda fh: torch.save(obj, fh), error=CheckpointError)


def load_checkpoint(path: str | Path, *, kind: str | None = None) -> dict:
    """Read a checkpoint safely; every failure is a CheckpointError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")
    try:
        with warnings.catch_warnings():
            # A raw pickle (protocol 4/5) makes torch warn about its protocol just before refusing it:
            # the refusal below says everything the user needs.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses every import a pickle asks for (a class, os.system, ...) before running it.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found or "Unsupported global" in str(exc):
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(f"{path}: refused to load: the file contains Python objects or code{what}, not "
                                  "plain data (only geomodel checkpoints are accepted; nothing was executed)") from None
        if "Unsupported operand" in str(exc):  # a pickle stream beyond what the safe loader reads
            raise CheckpointError(f"{path}: refused to load: a raw Python pickle, not a plain-data PyTorch "
                                  "checkpoint (only geomodel checkpoints are accepted; nothing was executed)") from None
        raise CheckpointError(f"{path}: not a geomodel checkpoint (not a readable PyTorch file)") from None
    except Exception as exc:  # noqa: BLE001 - torch's readers fail on garbage with any exception type
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint; it may be truncated or not a checkpoint "
                              f"({msg})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a geomodel checkpoint (no '{FORMAT}' header)")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not supported by this "
                              f"geomodel (which reads version {FORMAT_VERSION}); retrain or upgrade geomodel")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: expected a {kind!r} checkpoint, found {ckpt.get('kind')!r}")
    return ckpt


def make_checkpoint(model: nn.Module, *, kind: str, model_config: dict, data_config: dict, image_size: int,
                    norm: tuple, frame: str, region_names: list[str], coord_stats: dict | None = None,
                    metrics: dict | None = None, train_size: int = 0, resume: dict | None = None,
                    omit_pretrained_trunk: bool = False) -> dict:
    """Assemble the plain-typed checkpoint dict (see the module docstring).

    `omit_pretrained_trunk`: the trunk is frozen at its published pretrained weights,
    so they are not stored (`backbone_weights: "pretrained"`) and are rebuilt from the
    weights package on load; a frozen EfficientNet-Lite0 model then takes ~1 MB, not ~14.
    """
    state = {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}
    if omit_pretrained_trunk:
        state = {k: v for k, v in state.items() if not k.startswith("backbone.trunk.")}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model_config": model_config,
        "data_config": data_config,
        "image_size": int(image_size),
        "norm": {"mean": [float(v) for v in norm[0]], "std": [float(v) for v in norm[1]]},
        "frame": frame,
        "region_names": list(region_names),
        "num_regions": len(region_names),
        "coord_stats": coord_stats,
        "state_dict": state,
        "backbone_weights": "pretrained" if omit_pretrained_trunk else "stored",
        "metrics": metrics or {},
        "train_size": int(train_size),
        "resume": resume,
    }
