"""Inference: `Predictor.from_dir(MODEL_DIR).predict(images)` -> plain results."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from geomodel.data.images import ImageInput, describe, load_image
from geomodel.data.paths import image_paths
from geomodel.data.transforms import build_transforms
from geomodel.engine.checkpoint import load_checkpoint
from geomodel.engine.gallery import open_gallery
from geomodel.engine.loop import resolve_device
from geomodel.errors import CheckpointError, GeomodelError
from geomodel.models import model_from_checkpoint
from geomodel.regions import FILE_NAME as REGIONS_FILE
from geomodel.regions import Regions, read_regions


@dataclass
class ModelInfo:
    """What the loaded model is, for people (the app's Model tab) and for code."""

    backbones: dict[str, str]
    layout: str
    region_names: list[str]
    frame: str
    error_unit: str
    image_size: int
    train_size: int
    metrics: dict
    model_dir: str
    region_polygons: str = ""  # where the regions' polygons come from ("" for none: an older model directory)


PRECISIONS = ("fp32", "bf16")
# Photos are decoded to a shorter side of DECODE_SCALE x the model's input size, not at full size:
# JPEGs in the DCT (draft), others box-averaged right after decoding. The transforms then resize
# to the input size as before. Measured with bench/decode.py (README, Limits and safety).
DECODE_SCALE = 2


def _described(ckpt: dict) -> dict:
    """A checkpoint's description without its weights and training state (kept alive by the Predictor)."""
    return {k: v for k, v in ckpt.items() if k not in ("state_dict", "resume")}


class Predictor:
    """The two stages loaded once, run under inference mode.

    With the shared layout one backbone pass per photo feeds both heads; with the
    separate layout each stage runs its own backbone.

    Speed settings (measured with `bench/inference.py` on a 2-core CPU): on CPU the
    trunks run in channels_last memory format (1.05-1.4x faster for EfficientNet-Lite0)
    and `predict` sends 4 photos per forward pass (`self.batch_size`). `threads` sets
    torch's intra-op thread count (default: torch's, one per core). On a machine busy
    with other work, spinning OpenMP threads slow inference down up to 10x: start the
    process with OMP_WAIT_POLICY=PASSIVE (read when torch loads) or use threads=1.
    `precision="bf16"` runs the trunks under bfloat16 autocast: ~2x faster on CPUs
    with AVX512-BF16/AMX (slower on CPUs without), but on the campus photos it changed
    3 of 245 region predictions, so it is opt-in.
    """

    def __init__(self, region_ckpt: dict, coords_ckpt: dict, *, device: str = "auto", model_dir: str = "",
                 threads: int | None = None, precision: str = "fp32", coord_regions: int = 1,
                 regions: Regions | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not valid; choose one of: {', '.join(PRECISIONS)}")
        self.precision = precision
        if coord_regions < 1:
            raise ValueError(f"coord_regions must be >= 1, got {coord_regions}")
        # 1: stage 2 reads the most probable region (the original); K > 1: the coordinates for
        # the K most probable regions, weighted by their probabilities (hedges near borders).
        self.coord_regions = coord_regions
        if region_ckpt["num_regions"] != coords_ckpt["num_regions"]:
            raise CheckpointError(f"{model_dir}: stage 2 was trained for {coords_ckpt['num_regions']} regions but "
                                  f"stage 1 predicts {region_ckpt['num_regions']}; retrain stage 2 on this model")
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        # what the checkpoints say about the model, without their weights: the models hold those
        self.region_ckpt, self.coords_ckpt = (_described(c) for c in (region_ckpt, coords_ckpt))
        self.region_model = model_from_checkpoint(region_ckpt, path=f"{model_dir}/region.pt").to(self.device)
        self.coords_model = model_from_checkpoint(coords_ckpt, path=f"{model_dir}/coords.pt").to(self.device)
        if region_ckpt.get("gallery"):
            if not model_dir:
                raise CheckpointError("this region checkpoint keeps its matching gallery in a file beside it: "
                                      "load it with Predictor.from_dir(model_dir)")
            open_gallery(self.region_model, region_ckpt, Path(model_dir))
        self.shared = self.coords_model.backbone is None
        if self.shared and region_ckpt["image_size"] != coords_ckpt["image_size"]:
            raise CheckpointError(f"{model_dir}: shared-layout stages disagree on image size")
        self.region_names: list[str] = list(region_ckpt["region_names"])
        self.frame: str = coords_ckpt["frame"]
        if regions is not None and (len(regions) != len(self.region_names) or regions.frame != self.frame):
            raise CheckpointError(f"{model_dir}/{REGIONS_FILE}: {len(regions)} {regions.frame} regions, but the "
                                  f"model predicts {len(self.region_names)} {self.frame} regions")
        # The regions' polygons (model_dir/regions.geojson), or None for model directories written
        # before models carried them.
        self.regions: Regions | None = regions
        self._tf_region = build_transforms((region_ckpt["norm"]["mean"], region_ckpt["norm"]["std"]),
                                           region_ckpt["image_size"], train=False)
        self._tf_coords = build_transforms((coords_ckpt["norm"]["mean"], coords_ckpt["norm"]["std"]),
                                           coords_ckpt["image_size"], train=False)
        if self.device.type == "cpu":  # the trunks only: a 4-D gallery buffer would be copied for nothing
            self.region_model.backbone.to(memory_format=torch.channels_last)
            if self.coords_model.backbone is not None:
                self.coords_model.backbone.to(memory_format=torch.channels_last)
        self.model_dir = model_dir
        # Photos per forward pass when predict() is not told: on CPU small batches are faster per
        # photo for EfficientNet-Lite (activations stay in cache; 32 was ~40% slower than 2-4).
        self.batch_size = 4 if self.device.type == "cpu" else 32
        self.decode_scale: float | None = DECODE_SCALE  # see DECODE_SCALE; None: decode at full size

    @classmethod
    def from_dir(cls, model_dir: str | Path, device: str = "auto", threads: int | None = None,
                 precision: str = "fp32", coord_regions: int = 1) -> "Predictor":
        """Load `region.pt` and `coords.pt` from a model directory written by `python -m train fit`."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise CheckpointError(f"model directory not found: {model_dir}")
        region = load_checkpoint(model_dir / "region.pt", kind="region")
        coords = load_checkpoint(model_dir / "coords.pt", kind="coords")
        polygons = model_dir / REGIONS_FILE
        regions = read_regions(polygons, frame=coords["frame"]) if polygons.exists() else None
        return cls(region, coords, device=device, model_dir=str(model_dir), threads=threads, precision=precision,
                   coord_regions=coord_regions, regions=regions)

    @property
    def num_regions(self) -> int:
        return len(self.region_names)

    @property
    def decode_side(self) -> int | None:
        """Shorter side photos are decoded to (`load_image(shorter_side=...)`): `decode_scale` times the
        input size; None (full size) when `decode_scale` is 0 or None."""
        if not self.decode_scale:
            return None
        return int(self.decode_scale * max(self.region_ckpt["image_size"], self.coords_ckpt["image_size"]))

    def info(self) -> ModelInfo:
        r, c = self.region_ckpt, self.coords_ckpt
        return ModelInfo(
            backbones={"region": r["model_config"]["backbone"],
                       "coords": c["model_config"]["backbone"] + (" (shared with region)" if self.shared else "")},
            layout="shared" if self.shared else "separate", region_names=self.region_names, frame=self.frame,
            error_unit=c["data_config"].get("error_unit") or ("m" if self.frame == "wgs84" else "units"),
            image_size=r["image_size"], train_size=r["train_size"],
            metrics={"region": r.get("metrics", {}), "coords": c.get("metrics", {})}, model_dir=self.model_dir,
            region_polygons=f"{len(self.regions)} polygons ({REGIONS_FILE})" if self.regions is not None else "")

    def predict_tensors(self, images: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB PIL images -> (probabilities (B, R), lat/lon (B, 2) float64 in dataset units)."""
        probs, latlon, _ = self._infer(images)
        return probs, latlon

    @torch.inference_mode()
    def _infer(self, images: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`predict_tensors` plus the heading in degrees (B,) when stage 2 learnt it, else None."""
        feats, maps = self._trunk(self.region_model, [self._tf_region(im) for im in images],
                                  maps=self.region_model.matching)
        probs = self.region_model.probabilities(feats, maps)  # head, fused with matching when it has a gallery
        if not self.shared:
            feats, _ = self._trunk(self.coords_model, [self._tf_coords(im) for im in images])
        top_p, top_i = probs.topk(min(self.coord_regions, probs.shape[1]), dim=1)
        weights = top_p / top_p.sum(dim=1, keepdim=True)  # (B, K)
        z = sum(weights[:, j:j + 1] * self.coords_model.forward_head(feats, top_i[:, j]).float()
                for j in range(top_i.shape[1]))
        heading = self.coords_model.heading(z)
        return probs.cpu(), self.coords_model.denormalize(z).cpu(), None if heading is None else heading.cpu()

    def _trunk(self, model: torch.nn.Module, tensors: list[torch.Tensor], *,
               maps: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, D) float32 features of transformed images, and (`maps`) the matched layers' maps.

        Heads and matching always run in float32.
        """
        x = torch.stack(tensors).to(self.device)
        x = x.contiguous(memory_format=torch.channels_last) if self.device.type == "cpu" else x
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            if maps:
                feats, layer_maps = model.forward_features_and_maps(x)
                return feats.float(), [m.float() for m in layer_maps]
            return model.forward_features(x).float(), []

    def predict(self, images: ImageInput | Iterable[ImageInput], top_k: int = 3, batch_size: int | None = None,
                progress: bool = False) -> list[dict]:
        """Predict region and coordinates for one or many images (PIL images, paths, bytes).

        Returns one dict per input, in order: `file`, `region_id` (1-based), `region_name`,
        `region_prob`, `top_k` (list of {region_id, region_name, prob}), `probs` (every region's
        probability, region 1 first), `latitude`, `longitude`, `heading` (camera heading in degrees, None unless the model learnt it),
        `error` (None, or why this image could not be used: a bad image never
        costs the others their results).
        """
        single = not isinstance(images, (list, tuple)) and not hasattr(images, "__next__")
        items = [images] if single else list(images)
        results: list[dict | None] = [None] * len(items)
        k = max(1, min(top_k, self.num_regions))
        batch_size = batch_size or self.batch_size
        starts = range(0, len(items), batch_size)
        for start in tqdm(starts, desc="predicting", disable=not progress or None, leave=False):
            chunk: list[tuple[int, object]] = []  # decoded one batch at a time: memory stays bounded
            for i in range(start, min(start + batch_size, len(items))):
                try:
                    chunk.append((i, load_image(items[i], shorter_side=self.decode_side)))
                except GeomodelError as exc:
                    results[i] = self._failed(items[i], str(exc))
            if not chunk:
                continue
            probs, latlon, heading = self._infer([im for _, im in chunk])
            top_p, top_i = probs.topk(k, dim=1)
            headings = heading.tolist() if heading is not None else [None] * len(chunk)
            rows = zip(chunk, top_p.tolist(), top_i.tolist(), probs.tolist(), latlon.tolist(), headings)
            for (i, _), p, ti, every, ll, hd in rows:
                results[i] = {
                    "file": describe(items[i]), "region_id": ti[0] + 1, "region_name": self.region_names[ti[0]],
                    "region_prob": float(p[0]),
                    "top_k": [{"region_id": r + 1, "region_name": self.region_names[r], "prob": float(q)}
                              for r, q in zip(ti, p)],
                    "probs": every, "latitude": float(ll[0]), "longitude": float(ll[1]), "heading": hd, "error": None,
                }
        return results

    @staticmethod
    def _failed(item: object, reason: str) -> dict:
        return {"file": describe(item), "region_id": None, "region_name": None, "region_prob": None, "top_k": [],
                "probs": None, "latitude": None, "longitude": None, "heading": None, "error": reason}

    def predict_frame(self, df: pd.DataFrame, images_dir: str | Path, batch_size: int | None = None,
                      progress: bool = True, *, csv: str | Path = "labels CSV",
                      allow_outside: bool = False) -> pd.DataFrame:
        """Predictions for every row of a labels frame, as columns added to a copy of it.

        Every file must resolve inside `images_dir` (`geomodel.data.paths`) unless `allow_outside`;
        `csv` names the file in that message.
        """
        paths = image_paths(df, images_dir, csv, allow_outside=allow_outside)
        preds = []
        step = max(32, batch_size or 0)  # photos per progress-bar step
        for start in tqdm(range(0, len(paths), step), desc="evaluating", disable=None if progress else True):
            preds += self.predict(paths[start:start + step], batch_size=batch_size)
        out = df.copy()
        out["pred_region_id"] = [p["region_id"] for p in preds]
        out["pred_region_prob"] = [p["region_prob"] for p in preds]
        out["pred_latitude"] = [p["latitude"] for p in preds]
        out["pred_longitude"] = [p["longitude"] for p in preds]
        out["pred_heading"] = [p["heading"] for p in preds]
        out["error"] = [p["error"] for p in preds]
        return out


def evaluate_frame(pred: pd.DataFrame, num_regions: int, frame: str,
                   label_bounds: tuple[Sequence[float], Sequence[float]] | None = None) -> dict:
    """Metrics of `Predictor.predict_frame` output over the rows that could be predicted.

    `label_bounds` ((lat_low, lon_low), (lat_high, lon_high)), the training split's outlier
    bounds: coordinate metrics are also given over the photos whose labels lie inside them
    (`*_inliers`), since one mislabelled photo kilometres away can dominate an MSE.
    """
    from geomodel.metrics import coord_metrics, per_region_median_error, region_metrics
    from geomodel.geo import distance

    ok = pred[pred["error"].isna()]
    true_r = ok["Region_ID"].to_numpy(np.int64) - 1
    pred_r = ok["pred_region_id"].to_numpy(np.int64) - 1
    t = ok[["latitude", "longitude"]].to_numpy(np.float64)
    p = ok[["pred_latitude", "pred_longitude"]].to_numpy(np.float64)
    reg = region_metrics(true_r, pred_r, num_regions)
    crd = coord_metrics(t, p, frame)
    err = distance(frame, t[:, 0], t[:, 1], p[:, 0], p[:, 1])
    out = {"n_images": int(len(pred)), "n_failed": int(len(pred) - len(ok)), **crd,
           "region_accuracy": reg["region_accuracy"], "per_region_accuracy": reg["per_region_accuracy"],
           "confusion": reg["confusion"], "per_region_median_error": per_region_median_error(err, true_r, num_regions),
           "failed": pred.loc[pred["error"].notna(), ["filename", "error"]].to_dict("records")}
    if "angle" in ok and ok["pred_heading"].notna().any():
        from geomodel.metrics import angular_error

        known = ok["angle"].notna() & ok["pred_heading"].notna()
        err_deg = angular_error(ok.loc[known, "angle"].to_numpy(np.float64) % 360,
                                ok.loc[known, "pred_heading"].to_numpy(np.float64))
        out.update({"heading_mae": float(err_deg.mean()) if len(err_deg) else float("nan"),
                    "heading_median_error": float(np.median(err_deg)) if len(err_deg) else float("nan")})
    if label_bounds is not None:
        low, high = np.asarray(label_bounds[0]), np.asarray(label_bounds[1])
        inside = np.all((t >= low) & (t <= high), axis=1)
        inl = coord_metrics(t[inside], p[inside], frame)
        out.update({"n_label_outliers": int((~inside).sum()),
                    "label_outliers": ok.loc[~inside, "filename"].tolist(),
                    "coord_mse_inliers": inl["coord_mse"], "mean_error_inliers": inl["mean_error"],
                    "median_error_inliers": inl["median_error"]})
    return out
