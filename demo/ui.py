"""The Gradio app: thin wiring of `AppContext` (loaded once) to the pure builders.

`load_context(config)` does all start-up work (model, validation predictions, plan, example
list); `build_app(ctx)` lays out the tabs and events. Per-visitor data (the last batch of
results) lives in `gr.State`; the context is only read after start-up.
"""
from __future__ import annotations

import atexit
import functools
import json
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from fastapi.responses import JSONResponse, PlainTextResponse

from demo import results as R
from demo.map_regions import RegionFill
from demo.maps import PlanOverlay, render_map, to_iframe
from demo.service import CpuTurns, TooManyPhotos, predict_photos
from demo.settings import ROOT, AppConfig, load_plan
from demo.thumbnails import ThumbnailFolder
from demo.upload import photo_files
from demo.validation import ALL_REGIONS, ValidationSet, read_validation_labels, region_choices, region_of_choice
from demo.validation_job import ValidationJob
from geomodel.errors import GeomodelError
from geomodel.predictor import ModelInfo, Predictor

MAP_HEIGHT = 520
_DOWNLOAD_TTL_S = 3600  # Gradio deletes its cached copies of uploads and downloads after this
_WORK_TTL_S = 60  # our own CSV/GeoJSON files: Gradio copied each into its cache when it was returned
_REQUESTS_SERVED = 8  # prediction requests admitted at once; they take turns photo by photo (service.CpuTurns)
_log = logging.getLogger(__name__)
_WAITING_MAP = '<div class="gm-note">The map appears here when the validation photos are predicted.</div>'
_CSS = """
.gm-note {font-size: 0.9em; opacity: 0.85}
"""


@dataclass
class AppContext:
    """Start-up state shared (read-only) by every visitor."""

    config: AppConfig
    predictor: Predictor
    info: ModelInfo
    plan: PlanOverlay | None
    validation: ValidationJob | None  # the explorer's predictions, computed in the background
    validation_problem: str | None  # why there is no explorer, when there is none
    examples: list[Path]
    empty_map: str  # the map before any prediction (just the plan and the regions, if any)
    work_dir: Path  # where download files are written (removed when the process exits)
    turns: CpuTurns  # the order in which requests' photos get the CPU (shared by all visitors)
    regions: dict | None = None  # the model's regions.geojson (None: an old model directory without one)

    @property
    def bundled(self) -> bool:
        return self.config.is_bundled


def load_context(config: AppConfig) -> AppContext:
    """Load the model once, check the validation CSV, and start predicting it in the background."""
    predictor = Predictor.from_dir(config.model, device=config.device, threads=config.threads)
    info = predictor.info()
    plan = load_plan(config.plan) if config.plan and predictor.frame == "planar" else None
    regions = _regions_geojson(predictor)
    validation, problem = None, None
    if config.val_csv is not None:
        try:
            labels = read_validation_labels(predictor, config.val_csv, config.val_images,  # a bad CSV is said at once
                                            allow_outside=config.allow_outside_images)
        except GeomodelError as exc:
            problem = str(exc)
        else:
            thumbs = ThumbnailFolder()  # served by Gradio's file route from its cache folder; removed at exit
            atexit.register(thumbs.remove)
            validation = ValidationJob(lambda progress: ValidationSet.compute(
                predictor, labels, config.val_images, plan=plan, map_height=MAP_HEIGHT + 40, regions=regions,
                thumbnails=thumbs, progress=progress, allow_outside=config.allow_outside_images), total=len(labels))
            atexit.register(validation.stop)  # before thumbs.remove (atexit runs last-registered first)
    else:
        problem = "No validation set configured: start the app with --val-csv CSV --val-images FOLDER."
    empty = to_iframe(render_map([], frame=predictor.frame, plan=plan, error_unit=info.error_unit,
                                 title="Predictions appear here", regions=regions), height=MAP_HEIGHT)
    work_dir = Path(tempfile.mkdtemp(prefix="geomodel-app-"))
    atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
    return AppContext(config, predictor, info, plan, validation, problem, list(config.examples or []), empty,
                      work_dir, CpuTurns.create(config.concurrency), regions)


def _regions_geojson(predictor: Predictor) -> dict | None:
    """The model's regions as GeoJSON (checked when the model directory was read), or None."""
    return predictor.regions.to_geojson() if predictor.regions is not None else None  # None: no regions.geojson


# ------------------------------------------------------------------------------------ handlers


def predict(ctx: AppContext, files: list[Any] | None, progress: gr.Progress | None = None
            ) -> tuple[Any, str, list[dict]]:
    """Uploaded files -> (results table, map HTML, rows for the per-visitor state)."""
    paths = [_path_of(f) for f in (files or [])]
    if not paths:
        raise gr.Error("Add at least one photo (upload, or click an example) and press Locate.")
    report = None
    if progress is not None:
        report = lambda done, total: progress((done, total), desc="Locating photos", unit="photos")  # noqa: E731
    try:
        rows = predict_photos(ctx.predictor, paths, max_files=ctx.config.max_files,
                              max_bytes=ctx.config.max_file_size, max_pixels=ctx.config.max_request_pixels,
                              progress=report, turns=ctx.turns)
    except TooManyPhotos as exc:
        raise gr.Error(str(exc), title="Too many photos") from None
    table = R.results_table(rows, ctx.info.error_unit, gps=ctx.predictor.frame == "wgs84")
    return table, prediction_map(ctx, rows), rows


def prediction_map(ctx: AppContext, rows: list[dict]) -> str:
    """The Predict map: the photos' points, and the regions shaded by the probabilities of the
    selected photo (at first the first), which a click on a dot or a table row changes."""
    n = sum(r.get("error") is None for r in rows)
    fills = [RegionFill.probability(n_regions=ctx.predictor.num_regions)] if ctx.regions is not None else []
    doc = render_map(R.map_points(rows), frame=ctx.predictor.frame, plan=ctx.plan, error_unit=ctx.info.error_unit,
                     title=f"{n} predicted photo{'s' if n != 1 else ''}", regions=ctx.regions, region_fills=fills)
    return to_iframe(doc, height=MAP_HEIGHT)


def select_row(rows: list[dict] | None, evt: gr.SelectData) -> int:
    """A click in the results table -> the map point of that photo (-1: none, e.g. a failed photo)."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return R.map_index(rows or [], int(row)) if row is not None else -1


# Runs in the visitor's browser after `select_row`: tells the map (a sandboxed iframe, so only by a
# message carrying a number) which photo to shade the regions for.
_SELECT_JS = """(i) => {
  const frame = document.querySelector('#prediction-map iframe');
  if (frame && frame.contentWindow && Number.isInteger(i) && i >= 0) frame.contentWindow.postMessage({gmSelect: i}, '*');
  return i;
}"""


def downloads(ctx: AppContext, rows: list[dict] | None) -> tuple[str, str, Any, Any]:
    """Summary, problem list and the CSV / GeoJSON download buttons for the visitor's results."""
    rows = rows or []
    if not rows:
        hidden = gr.DownloadButton(visible=False)
        return "", "", hidden, hidden
    folder = _fresh_folder(ctx.work_dir)
    csv_path = folder / "predictions.csv"
    csv_path.write_text(R.to_csv(rows), encoding="utf-8")
    geo_path = folder / "predictions.geojson"
    geo_path.write_text(json.dumps(R.to_geojson(rows, ctx.predictor.frame), indent=1), encoding="utf-8")
    return (R.summary_markdown(rows, ctx.info.error_unit), R.problems_markdown(rows),
            gr.DownloadButton(value=str(csv_path), visible=True), gr.DownloadButton(value=str(geo_path), visible=True))


def validation_view(ctx: AppContext, choice: str | None) -> tuple[str, str, Any]:
    """Summary, map and histogram of the explorer for a filter choice (its progress while it is computed)."""
    job = ctx.validation
    if job is None or (job.ready and job.result is None):
        problem = ctx.validation_problem or (job.problem if job is not None else "")
        return R.escape_markdown(problem or ""), "", None
    if not job.ready:
        return job.status(), _WAITING_MAP, None
    vs = job.result
    view = vs.view(region_of_choice(choice, ctx.predictor.region_names))
    return view.summary, view.map_html, gr.BarPlot(view.histogram, x_bin=vs.bin_width)


def validation_tick(ctx: AppContext, choice: str | None) -> tuple[str, str, Any, Any]:
    """The explorer's timer while the predictions run: progress, then the first view (and the timer stops)."""
    summary, map_html, hist = validation_view(ctx, choice)
    if ctx.validation is not None and not ctx.validation.ready:
        return summary, gr.skip(), gr.skip(), gr.Timer(active=True)
    return summary, map_html, hist, gr.Timer(active=False)


def _matching_line(reg: dict, regions: int) -> str:
    """Stage 1's local matching: the gallery, the fusion weight fit chose, head alone vs fused on the hold-out."""
    head = reg.get("head_accuracy", float("nan"))
    more = ("more photos per region raise accuracy most: " + R.code_span("python -m train learning-curve")
            + " says how many")
    if reg.get("match_weight") == 0:
        best = max((r["accuracy"] for r in reg.get("fusion", []) if r["weight"] > 0), default=float("nan"))
        return (f"off: on the hold-out it did not beat the head alone ({head:.1%}; best with matching "
                f"{best:.1%}), so no gallery is stored; {more}")
    per_region = reg["gallery_size"] / max(regions, 1)
    weight = f", weight {reg['match_weight']:g} chosen on the hold-out" if "match_weight" in reg else ""
    return (f"against {reg['gallery_size']:,} labelled photos, ~{per_region:.0f} per region{weight} (head alone: "
            f"{head:.1%} on the hold-out, with matching {reg.get('accuracy', float('nan')):.1%}); {more}")


def model_markdown(info: ModelInfo, config: AppConfig) -> str:
    """What the loaded model is, as Markdown (every value from the checkpoint is escaped)."""
    e = R.escape_markdown
    where = config.model.resolve()
    shown = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where.name
    region_list = ", ".join(f"{i + 1} {e(n)}" for i, n in enumerate(info.region_names))
    frame = ("WGS84 latitude/longitude, errors in metres" if info.frame == "wgs84"
             else f"planar coordinates, errors in {e(info.error_unit)}")
    shown = config.sources.get("model", shown)  # a model from the Hub is known by its hf:// URL, not its cache path
    rows = [("Model", R.code_span(str(shown)) + (" (bundled synthetic demo)" if config.is_bundled else "")),
            ("Region classifier backbone", e(info.backbones["region"])),
            ("Coordinate regressor backbone", e(info.backbones["coords"])),
            ("Layout", e(info.layout)), ("Regions", f"{len(info.region_names)}: {region_list}"),
            ("Region outlines", e(info.region_polygons) or "none (a model directory without regions.geojson)"),
            ("Coordinate frame", frame), ("Input size", f"{info.image_size} px"),
            ("Training photos", f"{info.train_size:,}")]
    reg, crd = info.metrics.get("region", {}), info.metrics.get("coords", {})
    if "accuracy" in reg:
        rows.append(("Region accuracy (training hold-out)", f"{reg['accuracy']:.1%}"))
    if "gallery_size" in reg:
        rows.append(("Local matching", _matching_line(reg, len(info.region_names))))
    if "median_error" in crd:
        rows.append(("Median error (training hold-out)", f"{crd['median_error']:,.1f} {e(info.error_unit)}"))
    if "coord_mse" in crd:
        rows.append(("Coordinate MSE (training hold-out)", f"{crd['coord_mse']:,.1f} {e(info.error_unit)}²"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    note = ("\n\nThe bundled model was trained on a **synthetic** campus only; it knows nothing about real "
            "places. Train your own with `python -m train fit` and start the app with `--model`."
            if config.is_bundled else "")
    return f"| | |\n|---|---|\n{table}{note}"


# ------------------------------------------------------------------------------------ layout


def build_app(ctx: AppContext) -> gr.Blocks:
    """The Blocks app (not launched; see `app.py`)."""
    cfg = ctx.config
    unit = ctx.info.error_unit
    frame_note = ("coordinates are the plan's x/y" if ctx.predictor.frame == "planar"
                  else "photos with EXIF GPS also show their true point, the error line and the distance")
    with gr.Blocks(title="geomodel: where was this photo taken?", delete_cache=(900, _DOWNLOAD_TTL_S)) as app:
        rows_state = gr.State([])
        gr.Markdown("# geomodel: where was this photo taken?\n"
                    "Stage 1 picks the campus region, stage 2 the coordinates within it.")
        if ctx.bundled:
            gr.Markdown("This demo's model knows only a **synthetic campus** (the example photos below come "
                        "from it); photos of real places get meaningless answers.", elem_classes="gm-note")
        with gr.Tab("Predict", id="predict"):
            with gr.Row():
                with gr.Column(scale=2):
                    files = photo_files(label=(
                        f"Photos (up to {cfg.max_files} per request, {cfg.max_file_size / 2**20:.0f} MB each)"),
                        elem_id="photos")
                    locate = gr.Button("Locate photos", variant="primary", elem_id="locate")
                    if ctx.examples:
                        gallery = gr.Gallery([str(p) for p in ctx.examples], label="Examples: click one to locate it",
                                             columns=3, height=300, allow_preview=False, interactive=False,
                                             object_fit="cover", buttons=[], elem_id="examples")
                        all_examples = gr.Button("Locate all examples", size="sm")
                with gr.Column(scale=3):
                    pred_map = gr.HTML(ctx.empty_map, elem_id="prediction-map")
            summary = gr.Markdown(elem_id="summary")
            problems = gr.Markdown(elem_id="problems")
            gps = ctx.predictor.frame == "wgs84"
            widths = (["16%", "11%", "7%", "22%", "8%", "8%", "8%", "8%", "6%", "6%"] if gps
                      else ["19%", "13%", "8%", "26%", "10%", "10%", "14%"])
            table = gr.Dataframe(R.results_table([], unit, gps=gps), label="Results", interactive=False, wrap=True,
                                 column_widths=widths, elem_id="results")
            with gr.Row():
                csv_btn = gr.DownloadButton("Download CSV", visible=False, size="sm")
                geo_btn = gr.DownloadButton("Download GeoJSON", visible=False, size="sm")
            selected = gr.Number(-1, visible="hidden", precision=0, elem_id="selected-photo")
            shading = (" Regions are shaded by the predicted probabilities of the selected photo (the outlined dot): "
                       "click a dot or a table row to select another." if ctx.regions is not None else "")
            gr.Markdown(f"Blue dots are predictions; {frame_note}. Click a dot for details.{shading}",
                        elem_classes="gm-note")

        with gr.Tab("Validation explorer", id="validation"):
            if ctx.validation is not None:
                region = gr.Dropdown(region_choices(ctx.predictor.region_names), value=ALL_REGIONS,
                                     label="Region (true)", elem_id="region-filter")
                with gr.Row():
                    with gr.Column(scale=3):
                        val_map = gr.HTML(_WAITING_MAP, elem_id="validation-map")
                    with gr.Column(scale=2):
                        val_summary = gr.Markdown(ctx.validation.status(), elem_id="validation-summary")
                        hist = gr.BarPlot(None, x="error", y="photos", y_aggregate="sum",
                                          x_title=f"Error ({unit}); the last bar: this or more", y_title="Photos",
                                          y_lim=[0, None], title="Error histogram", height=260,
                                          elem_id="error-histogram")
                shading = (" Regions are shaded by their accuracy, or by their median error (switch in the map's "
                           "layer list); click a region to see which regions its photos were mistaken for."
                           if ctx.regions is not None else "")
                gr.Markdown("Each photo's true point (purple) is joined to its prediction (blue) by a line coloured "
                            f"by the error ({R.escape_markdown(unit)}).{shading} Predictions are computed once, "
                            "in the background when the app starts.", elem_classes="gm-note")
                explorer = [val_summary, val_map, hist]
                # The page carries no explorer data: it arrives from this timer once the predictions are done,
                # so the page's weight and the app's start-up do not grow with the validation set.
                timer = gr.Timer(1.0, active=True)
                timer.tick(_user_facing(lambda c: validation_tick(ctx, c)), region, [*explorer, timer],
                           api_visibility="private", queue=False, show_progress="hidden")
                region.change(_user_facing(lambda c: validation_view(ctx, c)), region, explorer,
                              api_name="validation_view", api_visibility="undocumented", concurrency_limit=4)
            else:
                gr.Markdown(R.escape_markdown(ctx.validation_problem or ""))

        with gr.Tab("Model", id="model"):
            gr.Markdown(model_markdown(ctx.info, cfg))
            gr.JSON({"region": ctx.info.metrics.get("region", {}), "coords": ctx.info.metrics.get("coords", {})},
                    label="Training metrics (hold-out split)")

        @_user_facing
        def run_predict(files_in: list[Any] | None, progress: gr.Progress = gr.Progress()):
            """Locate photos: a list of image files -> (results table, map HTML)."""
            return predict(ctx, files_in, progress)

        @_user_facing
        def run_downloads(rows: list[dict] | None):
            return downloads(ctx, rows)

        table.select(_user_facing(select_row), rows_state, selected, api_visibility="private", queue=False).then(
            None, selected, None, js=_SELECT_JS, api_visibility="private", queue=False)

        outputs = [table, pred_map, rows_state]
        after = [summary, problems, csv_btn, geo_btn]
        served = max(_REQUESTS_SERVED, cfg.concurrency)  # admitted at once; the CPU goes by turns
        locate.click(run_predict, files, outputs, api_name="predict", concurrency_limit=served,
                     concurrency_id="predict").success(run_downloads, rows_state, after, api_visibility="private")
        if ctx.examples:
            example_paths = [str(p) for p in ctx.examples]

            def pick(evt: gr.SelectData) -> list[str]:
                return [example_paths[evt.index]]

            gallery.select(pick, None, files, api_visibility="private").then(
                run_predict, files, outputs, api_visibility="private", concurrency_limit=served,
                concurrency_id="predict").success(run_downloads, rows_state, after, api_visibility="private")
            all_examples.click(lambda: example_paths, None, files, api_visibility="private").then(
                run_predict, files, outputs, api_visibility="private", concurrency_limit=served,
                concurrency_id="predict").success(run_downloads, rows_state, after, api_visibility="private")
    return app


def launch_kwargs(cfg: AppConfig) -> dict:
    """`launch()` settings: no extra file paths are served (uploads and Gradio's cache only).

    `show_error=True` gives API callers Gradio's own message for input it refuses before a
    handler runs (a path that was not uploaded, a missing input) instead of `{"error": null}`;
    the handlers' own failures are turned into a fixed message by `_user_facing`, so no
    exception text from inside the app reaches a visitor.
    """
    return dict(server_name=cfg.host, server_port=cfg.port, max_file_size=cfg.max_file_size, allowed_paths=[],
                show_error=True, css=_CSS, footer_links=["api"],
                app_kwargs={"exception_handlers": {KeyError: _unknown_endpoint}})


def _user_facing(handler: Callable) -> Callable:
    """A handler whose unexpected failures reach the visitor as one fixed line (details go to the log)."""
    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except Exception:  # noqa: BLE001 - logged in full; the visitor gets no internals
            _log.exception("%s failed", handler.__name__)
            raise gr.Error("Something went wrong on the server while handling this request; "
                           "the server log has the details.") from None
    return run


async def _unknown_endpoint(request: Any, exc: KeyError) -> Any:
    """Gradio looks events up by `fn_index` without a check: an unknown one was an HTTP 500."""
    if request.url.path.endswith("/queue/join") and exc.args and isinstance(exc.args[0], int):
        return JSONResponse({"detail": f"no event with fn_index {exc.args[0]}; this app's API is listed at "
                                       "/gradio_api/info (its endpoint: api_name '/predict')"}, status_code=404)
    _log.error("unhandled KeyError on %s", request.url.path, exc_info=exc)
    return PlainTextResponse("Internal Server Error", status_code=500)


# ------------------------------------------------------------------------------------ helpers


def _path_of(f: Any) -> str:
    """gr.File gives paths; API callers may send FileData-like dicts."""
    if isinstance(f, dict):
        return str(f.get("path") or f.get("name"))
    return str(getattr(f, "path", None) or getattr(f, "name", None) or f)


def _fresh_folder(work_dir: Path) -> Path:
    """A new folder for one visitor's downloads. Earlier ones are removed first: Gradio copied their
    files into its own cache when they were returned, so they do not pile up per request."""
    now = time.time()
    for old in work_dir.iterdir():
        try:
            if now - old.stat().st_mtime > _WORK_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:
            pass
    folder = work_dir / uuid.uuid4().hex
    folder.mkdir()
    return folder
