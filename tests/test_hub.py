"""`hf://` models and validation sets: the Hub cache offline, a local Hub server for network answers."""
from __future__ import annotations

import html
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from demo.settings import ASSETS, BUNDLED_EXAMPLES, BUNDLED_MODEL, config_from_args
from fake_hub import FakeHub, cache_layout, lay_out_cache, read_folder
from geomodel.hub import APP_FILES, HubError, HubSettings, parse_url, resolve_model

ROOT = Path(__file__).resolve().parents[1]
MODEL = "hf://owner/campus-model"
VAL_CSV = "hf://datasets/owner/campus-val/val/labels.csv"
TOKEN = "hf_valid_test_token"
EXAMPLE = sorted(BUNDLED_EXAMPLES.glob("*.jpg"))[0]


def _model_repo() -> dict[str, bytes]:
    """The bundled model directory as `fit` leaves it, resume checkpoint included."""
    files = read_folder(BUNDLED_MODEL)
    files["region_last.pt"] = b"resume state: must never be downloaded to serve"
    files["args.json"] = b"{}"
    return files


def _val_repo() -> dict[str, bytes]:
    return {**read_folder(ASSETS / "val", "val/"), "README.md": b"# validation photos\n"}


def _served(files: dict[str, bytes]) -> dict[str, bytes]:
    import fnmatch

    return {n: d for n, d in files.items() if any(fnmatch.fnmatchcase(n, p) for p in APP_FILES)}


@pytest.fixture
def cache(tmp_path) -> Path:
    """A Hub cache holding the model repo (app files only) and the validation dataset, as HF_HUB_CACHE."""
    cache = tmp_path / "hub-cache"
    lay_out_cache(cache, "model", "owner/campus-model", _served(_model_repo()))
    lay_out_cache(cache, "dataset", "owner/campus-val", _val_repo())
    return cache


def _offline(cache: Path) -> dict[str, str]:
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


# ------------------------------------------------------------------------------------ URLs


def test_urls_follow_the_hub_grammar():
    loc = parse_url("hf://owner/name", kind="model")
    assert (loc.repo_type, loc.repo_id, loc.revision, loc.path) == ("model", "owner/name", None, "")
    loc = parse_url("hf://datasets/owner/val@v1.0/photos/labels.csv", kind="dataset", need_path=True)
    assert (loc.repo_type, loc.repo_id, loc.revision, loc.path) == ("dataset", "owner/val", "v1.0", "photos/labels.csv")
    assert parse_url("hf://owner/name@refs/pr/3", kind="model").revision == "refs/pr/3"
    assert loc.download_command("photos/") == "hf download owner/val photos/ --repo-type dataset --revision v1.0"


@pytest.mark.parametrize("url, kind, need_path, says", [
    ("hf://", "model", False, "not a valid Hub URL"),
    ("hf://justaname", "model", False, "namespace/name"),
    ("hf://owner/name@", "model", False, "not a valid Hub URL"),
    ("hf://owner/na me", "model", False, "not a valid Hub URL"),
    ("hf://spaces/owner/name", "model", False, "names a space repo"),
    ("hf://owner/name/labels.csv", "dataset", True, "names a model repo"),
    ("hf://datasets/owner/name", "dataset", True, "names no file or folder"),
])
def test_malformed_urls_are_refused_in_one_line(url, kind, need_path, says):
    with pytest.raises(HubError) as err:
        parse_url(url, kind=kind, need_path=need_path)
    msg = str(err.value)
    assert says in msg and msg.startswith(url + ":") and "expected hf://" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------ the cache, offline


def test_settings_read_model_and_validation_set_from_the_cache(cache):
    cfg = config_from_args(["--model", MODEL, "--val-csv", VAL_CSV], env=_offline(cache))
    model_snapshot = cache / "models--owner--campus-model" / "snapshots"
    assert cfg.model.parent == model_snapshot and (cfg.model / "region.pt").is_symlink()
    assert cfg.plan == cfg.model / "plan.json"  # the plan came along
    assert cfg.val_csv.name == "labels.csv" and cfg.val_images == cfg.val_csv.parent / "images"  # images/ beside
    assert len(list(cfg.val_images.glob("*.jpg"))) == 60
    assert cfg.sources["model"].startswith(MODEL + " (commit ") and cfg.sources["val_csv"].startswith(VAL_CSV)
    assert not cfg.is_bundled and cfg.examples is None


def test_app_serves_the_hub_model_and_its_validation_set(cache, monkeypatch):
    import app

    for k, v in _offline(cache).items():
        monkeypatch.setenv(k, v)
    blocks, cfg = app.build(["--model", MODEL, "--val-csv", VAL_CSV,
                             "--val-images", "hf://datasets/owner/campus-val/val/images"])
    assert cfg.sources["val_images"].startswith("hf://datasets/owner/campus-val/val/images (commit ")
    page = json.dumps(blocks.get_config_file(), default=str)
    assert f"{MODEL} (commit " in page  # the Model tab names the repo
    # The explorer predicts its set in the background; its view says so until it is done.
    view = next(f.fn for f in blocks.fns.values() if f.api_name == "validation_view")
    for _ in range(1200):
        summary, _, _ = view("All regions")
        if "Predicting" not in summary:
            break
        time.sleep(0.1)
    assert "All regions: 60 validation photos" in summary  # the explorer's summary: every photo predicted
    assert "could not be read" not in summary


def test_hub_settings_follow_huggingface_hub_variables():
    assert HubSettings.from_env({"HF_HOME": "/h"}).cache_dir == str(Path("/h") / "hub")
    s = HubSettings.from_env({"HF_HOME": "/h", "HF_HUB_CACHE": "/c", "HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_x",
                              "HF_ENDPOINT": "http://127.0.0.1:1"})
    assert (s.cache_dir, s.offline, s.token, s.endpoint) == ("/c", True, "hf_x", "http://127.0.0.1:1")
    assert HubSettings.from_env({"HF_HUB_OFFLINE": "0"}).offline is False


def test_a_model_directory_in_a_folder_of_the_repo(tmp_path):
    cache = tmp_path / "cache"
    files = {f"campus/{n}": d for n, d in _served(_model_repo()).items()}
    lay_out_cache(cache, "model", "owner/models", {**files, "README.md": b"# two models\n"})
    got = resolve_model("hf://owner/models/campus", HubSettings(cache_dir=str(cache), offline=True))
    assert got.path.name == "campus" and (got.path / "region.pt").is_file()
    with pytest.raises(HubError, match="no region.pt or coords.pt"):
        resolve_model("hf://owner/models/other", HubSettings(cache_dir=str(cache), offline=True))


def test_checkpoints_from_the_hub_go_through_the_safe_loader(tmp_path):
    """A repo's region.pt carrying pickled code is refused by load_checkpoint, and nothing runs."""
    from geomodel.errors import CheckpointError
    from geomodel.predictor import Predictor
    from test_checkpoints import _malicious_checkpoint

    marker = tmp_path / "PWNED"
    files = _served(_model_repo())
    files["region.pt"] = _malicious_checkpoint(tmp_path / "evil.pt", marker).read_bytes()
    cache = tmp_path / "cache"
    lay_out_cache(cache, "model", "owner/evil", files)
    got = resolve_model("hf://owner/evil", HubSettings(cache_dir=str(cache), offline=True))
    with pytest.raises(CheckpointError, match="refused to load.*nothing was executed"):
        Predictor.from_dir(got.path, device="cpu")
    assert not marker.exists()


def test_nothing_cached_offline_says_which_repo_and_the_download_command(tmp_path):
    settings = HubSettings(cache_dir=str(tmp_path / "empty"), offline=True)
    with pytest.raises(HubError) as err:
        resolve_model("hf://owner/absent@v2", settings)
    msg = str(err.value)
    assert msg.startswith(f"hf://owner/absent@v2: not in the Hugging Face cache at {tmp_path / 'empty'}, and "
                          "HF_HUB_OFFLINE=1 forbids fetching it; where the Hub is reachable run: hf download")
    assert "\n" not in msg
    command = msg.split("run: ", 1)[1]
    assert shlex.split(command)[:3] == ["hf", "download", "owner/absent"] and "--revision v2" in command
    assert "--include region.pt --include coords.pt" in command
    with pytest.raises(HubError, match=r"not in the Hugging Face cache .* run: hf download owner/v val/labels.csv "
                                       r"--repo-type dataset$"):
        from geomodel.hub import resolve_dataset_file

        resolve_dataset_file("hf://datasets/owner/v/val/labels.csv", settings)


def test_app_exits_2_with_one_line_when_nothing_is_cached(tmp_path):
    env = {**os.environ, "GEOMODEL_MODEL_DIR": MODEL, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(f"error: {MODEL}: not in the Hugging Face cache") and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "run: hf download owner/campus-model --include region.pt" in out.stderr


def test_a_cached_repo_without_the_checkpoints_is_refused(tmp_path):
    cache = tmp_path / "cache"
    lay_out_cache(cache, "model", "owner/notes", {"README.md": b"# not a model\n", "plan.json": b"{}"})
    with pytest.raises(HubError, match=r"owner/notes: no region\.pt or coords\.pt in the copy \(commit [0-9a-f]{7}\) "
                                       r"in the Hugging Face cache at .*, and HF_HUB_OFFLINE=1 forbids fetching it"):
        resolve_model("hf://owner/notes", HubSettings(cache_dir=str(cache), offline=True))


def test_check_reports_a_complete_model_and_sizes(cache, capsys, monkeypatch):
    from train.cli import main

    for k, v in _offline(cache).items():
        monkeypatch.setenv(k, v)
    assert main(["check", str(BUNDLED_MODEL)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"coords\.pt +9\.0 MB +served", out) and re.search(r"region_history\.csv .* not needed", out)
    assert "trained on: 732 photos (hold-out 135); 6 regions: 1 Library quarter" in out
    assert "frame: planar" in out and "efficientnet_lite0" in out and "region accuracy 90.4%" in out
    assert "region polygons: 6 polygons (regions.geojson)" in out
    assert "warning" not in out and out.rstrip().endswith("complete: yes")
    assert main(["check", MODEL]) == 0  # the same through the cache
    out = capsys.readouterr().out
    assert out.startswith(f"model directory: {MODEL} (commit ") and "complete: yes" in out


@pytest.mark.parametrize("text, problem", [
    ('{"bounds": "x"}', "not a plan (needs \"bounds\""),
    ('{"bounds": [[0, 0], [1]]}', "not a plan"),
    ("not json", "not a plan"),
    ('{"bounds": [[0, 0], [1, "Infinity"]]}', "must be finite numbers"),
    ('{"bounds": [[0, 0], [1, 1]], "image": "../secret.png"}', "must be a file name beside plan.json"),
])
def test_a_broken_plan_is_one_message_naming_the_file_for_check_and_the_app(tmp_path, capsys, text, problem):
    from demo.settings import load_plan
    from geomodel.errors import DataError
    from train.cli import main

    d = tmp_path / "model"
    d.mkdir()
    for name in ("region.pt", "coords.pt", "plan.png"):
        (d / name).write_bytes((BUNDLED_MODEL / name).read_bytes())
    (d / "plan.json").write_text(text)
    with pytest.raises(DataError, match=re.escape(f"{d / 'plan.json'}: ") + ".*" + re.escape(problem)):
        load_plan(d / "plan.json")
    assert main(["check", str(d)]) == 1
    assert f"problem: {d / 'plan.json'}: " in capsys.readouterr().out
    (d / "plan.json").write_text('{"bounds": [[0, 0], [1, 1]]}')
    assert load_plan(d / "plan.json").bounds == ((0.0, 0.0), (1.0, 1.0))


def test_check_finds_what_is_missing_broken_or_too_big_for_a_space(tmp_path, capsys):
    from train.cli import main

    d = tmp_path / "model"
    d.mkdir()
    (d / "region.pt").write_bytes((BUNDLED_MODEL / "region.pt").read_bytes())
    (d / "plan.json").write_text(json.dumps({"bounds": [[0, 0], [1, 1]]}))
    (d / "coords_last.pt").write_bytes(b"\0" * (10 * 2**20 + 1))
    assert main(["check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "problem: coords.pt is missing" in out and "problem: plan.json draws plan.png, which is missing" in out
    assert re.search(r"warning: coords_last\.pt is 10\.0 MB, over the 10 MiB .*git lfs track.*repositories-getting"
                     r"-started", out)
    assert "resume checkpoint, not needed to serve" in out and out.rstrip().endswith("complete: no")
    (d / "coords.pt").write_bytes(b"PK\3\4 truncated")
    assert main(["check", str(d)]) == 1
    assert "problem: does not load: " in capsys.readouterr().out
    assert main(["check", str(tmp_path / "nowhere")]) == 2


# ------------------------------------------------------------------------------------ a local Hub server


def _online(endpoint: str, tmp_path: Path, token: str | None = None) -> dict[str, str]:
    """A child's environment: the Hub at `endpoint`, a fresh cache, no token from the developer's own setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update({"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home"),
                "HF_HUB_CACHE": str(tmp_path / "hub-cache")})
    if token:
        env["HF_TOKEN"] = token
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _one_line_error(out: subprocess.CompletedProcess) -> str:
    """Exit status 2 and one `error:` line, last; before it at most huggingface_hub's download progress bars."""
    assert out.returncode == 2, out.stdout + out.stderr
    *before, last = out.stderr.rstrip("\n").split("\n")
    assert last.startswith("error: ") and "Traceback" not in out.stderr, out.stderr
    assert all(line.strip("\r").startswith("Fetching ") or not line.strip() for line in before), out.stderr  # tqdm
    return last + "\n"


@pytest.fixture
def hub():
    with FakeHub(tokens=(TOKEN,)) as hub:
        hub.add("model", "owner/campus-model", _model_repo(), tags=("v1",))
        hub.add("model", "owner/private-model", _model_repo(), private=True)
        hub.add("model", "owner/notes", {"README.md": b"# not a model\n"})
        hub.add("dataset", "owner/campus-val", _val_repo())
        yield hub


def test_download_fetches_only_the_app_files_into_the_standard_cache(hub, tmp_path):
    out = _run(["-m", "train", "check", MODEL + "@v1"], _online(hub.url, tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "complete: yes" in out.stdout
    served = _served(_model_repo())
    assert hub.downloaded() == sorted(served)  # not region_last.pt, args.json or the histories
    # The layout this test suite writes by hand is the layout huggingface_hub wrote.
    lay_out_cache(tmp_path / "by-hand", "model", "owner/campus-model", served,
                  commit=hub.repos[("model", "owner/campus-model")].commit, revision="v1")
    assert cache_layout(tmp_path / "hub-cache") == cache_layout(tmp_path / "by-hand")


def test_a_revision_that_does_not_exist(hub, tmp_path):
    err = _one_line_error(_run(["app.py", "--model", MODEL + "@v9"], _online(hub.url, tmp_path)))
    assert err == (f"error: {MODEL}@v9: revision 'v9' does not exist in model owner/campus-model; name one of its "
                   "branches, tags or commits (https://huggingface.co/owner/campus-model)\n")


def test_a_private_repo_without_a_token_and_with_a_bad_one(hub, tmp_path):
    url = "hf://owner/private-model"
    err = _one_line_error(_run(["app.py", "--model", url], _online(hub.url, tmp_path)))
    assert f"{url}: model owner/private-model was not found on the Hub, or it is private: set HF_TOKEN" in err
    err = _one_line_error(_run(["app.py", "--model", url], _online(hub.url, tmp_path, token="hf_expired")))
    assert f"{url}: the Hub refused the token in HF_TOKEN (invalid credentials)" in err
    out = _run(["-c", f"from geomodel.hub import resolve_model; print(resolve_model({url!r}).describe())"],
               _online(hub.url, tmp_path, token=TOKEN))
    assert out.returncode == 0 and out.stdout.startswith(f"{url} (commit "), out.stdout + out.stderr


def test_a_repo_without_region_and_coords(hub, tmp_path):
    err = _one_line_error(_run(["app.py", "--model", "hf://owner/notes"], _online(hub.url, tmp_path)))
    assert "holds no region.pt or coords.pt, so it is not a model directory written by `python -m train fit`" in err
    out = _run(["-m", "train", "check", "hf://owner/notes"], _online(hub.url, tmp_path))
    assert out.returncode == 1 and out.stdout.rstrip().endswith("complete: no")


def test_no_network_and_nothing_cached(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: connections are refused, as with no network
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    err = _one_line_error(_run(["app.py", "--model", MODEL, "--val-csv", VAL_CSV], _online(closed, tmp_path)))
    assert f"error: {MODEL}: not in the Hugging Face cache at {tmp_path / 'hub-cache'}, and the Hub could not be " \
           "reached (ConnectError: " in err
    assert "run: hf download owner/campus-model --include region.pt --include coords.pt" in err


def test_following_the_offline_errors_leads_to_a_working_cache(hub, tmp_path):
    """Run the exact `hf download` commands the offline errors print until the settings resolve from the cache."""
    cache = tmp_path / "hub-cache"
    hf = Path(sys.executable).with_name("hf")
    commands = []
    for _ in range(5):
        try:
            cfg = config_from_args(["--model", MODEL, "--val-csv", VAL_CSV], env=_offline(cache))
            break
        except HubError as err:
            assert "HF_HUB_OFFLINE=1" in str(err) and "\n" not in str(err)
            commands.append(str(err).split("run: ", 1)[1])
            out = subprocess.run([str(hf), *shlex.split(commands[-1])[1:]], env=_online(hub.url, tmp_path),
                                 capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stdout + out.stderr
    assert commands == [
        "hf download owner/campus-model --include region.pt --include coords.pt --include region_gallery.npy "
        "--include regions.geojson "
        "--include plan.json --include plan.png --include '*_config.json' --include '*_metrics.json'",
        "hf download owner/campus-val val/labels.csv --repo-type dataset",
        "hf download owner/campus-val val/ --repo-type dataset"]
    assert (cfg.model / "coords.pt").is_file() and not (cfg.model / "region_last.pt").exists()
    assert cfg.val_images == cfg.val_csv.parent / "images" and len(list(cfg.val_images.glob("*.jpg"))) == 60


# ------------------------------------------------------------------------------------ the running app


@pytest.mark.slow
def test_running_app_predicts_with_a_hub_model_offline(cache, monkeypatch):
    import httpx
    from gradio_client import Client, handle_file

    import app

    for k, v in _offline(cache).items():
        monkeypatch.setenv(k, v)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    blocks, cfg = app.build(["--model", MODEL, "--val-csv", VAL_CSV, "--port", str(port)])
    url = app.launch(blocks, cfg, prevent_thread_lock=True, quiet=True).rstrip("/")
    try:
        client = Client(url, verbose=False, download_files=False)
        table, map_html = client.predict([handle_file(str(EXAMPLE))], api_name="/predict")
        row = dict(zip(table["headers"], table["data"][0]))
        assert row["File"] == EXAMPLE.name and row["Region"] and row["Problem"] == ""
        assert "gm_map.points(" in html.unescape(map_html)  # the photo's point on the map
        config = httpx.get(f"{url}/config", timeout=30).text
        assert f"{MODEL} (commit " in config
        for _ in range(1200):  # the explorer predicts its set in the background
            summary, _, _ = client.predict("All regions", api_name="/validation_view")
            if "Predicting" not in summary:
                break
            time.sleep(0.1)
        assert "60 validation photos" in summary
    finally:
        blocks.close()
