"""Model directories and validation sets on the Hugging Face Hub, named by `hf://` URLs.

    hf://OWNER/NAME[@REVISION][/FOLDER]        a model repo holding a model directory (`python -m train fit`)
    hf://datasets/OWNER/NAME[@REVISION]/PATH   a file or folder of a dataset repo (validation CSV, photos)

The grammar is huggingface_hub's own (`parse_hf_uri`). `resolve_model`, `resolve_dataset_file` and
`resolve_dataset_folder` download through `huggingface_hub` into its cache and return the local
path inside the cached snapshot. Only the files the app reads are fetched (`APP_FILES`), not the
`*_last.pt` resume checkpoints or the histories. A private repo needs HF_TOKEN; with HF_HUB_OFFLINE=1
only the cache is read. Every failure is a `HubError` with a one-line message naming the repo and
what to do. Nothing here loads a checkpoint: `Predictor.from_dir` reads the downloaded files with
`load_checkpoint` (weights_only) like any other.
"""
from __future__ import annotations

import contextlib
import csv
import glob
import logging
import os
import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from geomodel.errors import DataError, GeomodelError

SCHEME = "hf://"
REQUIRED_FILES = ("region.pt", "coords.pt")
# Everything of a model directory that serving reads: Predictor.from_dir (the checkpoints, the matching
# gallery, regions.geojson), the app's plan overlay, and the configs/metrics `check` reports. Resume files
# and histories stay behind.
APP_FILES = (*REQUIRED_FILES, "region_gallery.npy", "regions.geojson", "plan.json", "plan.png", "*_config.json",
             "*_metrics.json")
EXPECTED = {"model": "hf://OWNER/NAME[@REVISION]", "dataset": "hf://datasets/OWNER/NAME[@REVISION]/PATH"}
TOKENS_PAGE = "https://huggingface.co/settings/tokens"


class HubError(GeomodelError):
    """A Hub URL that cannot be used: malformed, unreachable and not cached, missing, or refused."""


class NotAModelError(HubError):
    """The model repo (or folder) exists but lacks region.pt or coords.pt."""


def is_hub_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


@dataclass(frozen=True)
class HubSettings:
    """How to reach the Hub; `from_env` reads the variables huggingface_hub documents."""

    cache_dir: str | None = None  # None: huggingface_hub's default (HF_HUB_CACHE, else HF_HOME/hub)
    token: str | None = None  # None: huggingface_hub's own lookup (HF_TOKEN, then `hf auth login`'s file)
    offline: bool = False  # read the cache only
    endpoint: str | None = None  # None: huggingface.co (HF_ENDPOINT names a mirror)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "HubSettings":
        """huggingface_hub reads these once, when imported; the app's settings take an explicit mapping."""
        env = os.environ if env is None else env
        cache = env.get("HF_HUB_CACHE") or (str(Path(env["HF_HOME"]) / "hub") if env.get("HF_HOME") else None)
        offline = str(env.get("HF_HUB_OFFLINE", "")).strip().upper() in {"1", "ON", "YES", "TRUE"}
        return cls(cache_dir=cache, token=env.get("HF_TOKEN") or None, offline=offline,
                   endpoint=env.get("HF_ENDPOINT") or None)

    def is_offline(self) -> bool:
        from huggingface_hub import constants

        return self.offline or constants.HF_HUB_OFFLINE  # the library refuses the network either way

    def sends_token(self) -> bool:
        from huggingface_hub import get_token

        return bool(self.token or get_token())

    def cache_path(self) -> str:
        from huggingface_hub import constants

        return self.cache_dir or constants.HF_HUB_CACHE


@dataclass(frozen=True)
class HubLocation:
    """A parsed `hf://` URL: repo, optional revision, path inside the repo."""

    repo_type: str  # "model" or "dataset"
    repo_id: str
    revision: str | None
    path: str  # "" for the repo root

    @property
    def url(self) -> str:
        kind = "datasets/" if self.repo_type == "dataset" else ""
        at = f"@{self.revision}" if self.revision else ""
        return f"{SCHEME}{kind}{self.repo_id}{at}" + (f"/{self.path}" if self.path else "")

    @property
    def repo(self) -> str:
        """How messages name the repo: `dataset owner/name`, `model owner/name`, with the revision."""
        return f"{self.repo_type} {self.repo_id}" + (f" at revision {self.revision!r}" if self.revision else "")

    def download_command(self, *files: str, include: tuple[str, ...] = ()) -> str:
        """The `hf download` command that puts these files (or folders, ending in `/`) into the cache."""
        words = ["hf", "download", self.repo_id, *files]
        if self.repo_type != "model":
            words += ["--repo-type", self.repo_type]
        if self.revision:
            words += ["--revision", self.revision]
        for pattern in include:
            words += ["--include", pattern]
        return shlex.join(words)

    def child(self, path: str) -> "HubLocation":
        return HubLocation(self.repo_type, self.repo_id, self.revision, path)


@dataclass(frozen=True)
class Resolved:
    """A local path inside the cached snapshot, and where it came from."""

    path: Path
    location: HubLocation
    commit: str  # the snapshot's commit hash

    def describe(self) -> str:
        return f"{self.location.url} (commit {self.commit[:7]})"


def parse_url(url: str, *, kind: str, need_path: bool = False) -> HubLocation:
    """Check a `hf://` URL names a repo of `kind` ("model" or "dataset"), and a path in it if `need_path`."""
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    expected = EXPECTED[kind]
    if not is_hub_url(url):
        raise HubError(f"{url}: not a Hub URL; expected {expected}")
    try:
        uri = parse_hf_uri(url)
    except HfUriError as exc:
        raise HubError(f"{url}: not a valid Hub URL ({exc.msg.strip().rstrip('.')}); expected {expected}") from None
    if uri.type != kind:
        raise HubError(f"{url}: names a {uri.type} repo, but a {kind} repo is needed here; expected {expected}")
    if need_path and not uri.path_in_repo:
        raise HubError(f"{url}: names no file or folder inside the repo; expected {expected}")
    return HubLocation(uri.type, uri.id, uri.revision, uri.path_in_repo.strip("/"))


def resolve_model(url: str, settings: HubSettings | None = None) -> Resolved:
    """Download a model directory's app files; raises HubError unless region.pt and coords.pt are there."""
    settings = settings or HubSettings.from_env()
    loc = parse_url(url, kind="model")
    prefix = glob.escape(loc.path) + "/" if loc.path else ""
    patterns = [prefix + name for name in APP_FILES]
    command = loc.download_command(include=tuple(patterns))
    snapshot = _snapshot(loc, settings, patterns, command)
    model_dir = snapshot / loc.path
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing and settings.is_offline():
        raise _not_cached(loc, f"no {' or '.join(missing)} in the copy (commit {snapshot.name[:7]}) in the Hugging "
                               "Face cache", settings, command)
    if missing:
        where = f"folder {loc.path!r} of " if loc.path else ""
        raise NotAModelError(f"{loc.url}: {where}{loc.repo} (commit {snapshot.name[:7]}) holds no "
                             f"{' or '.join(missing)}, so it is not a model directory written by `python -m train "
                             "fit`; upload one with `hf upload` (README: Host your own model on a Space)")
    _fetch_plan_image(loc, settings, snapshot, model_dir)
    return Resolved(model_dir, loc, snapshot.name)


def resolve_dataset_file(url: str, settings: HubSettings | None = None) -> Resolved:
    """Download one file of a dataset repo (e.g. the validation CSV)."""
    from huggingface_hub import hf_hub_download

    settings = settings or HubSettings.from_env()
    loc = parse_url(url, kind="dataset", need_path=True)
    with _hub_errors(loc, settings, loc.download_command(loc.path)):
        local = Path(hf_hub_download(loc.repo_id, loc.path, repo_type="dataset", revision=loc.revision,
                                     cache_dir=settings.cache_dir, token=settings.token,
                                     local_files_only=settings.offline, endpoint=settings.endpoint))
    snapshot = local.parents[len(Path(loc.path).parts) - 1]
    return Resolved(local, loc, snapshot.name)


def resolve_dataset_folder(url: str, settings: HubSettings | None = None) -> Resolved:
    """Download every file under a folder of a dataset repo (e.g. the validation photos)."""
    settings = settings or HubSettings.from_env()
    loc = parse_url(url, kind="dataset", need_path=True)
    command = loc.download_command(loc.path + "/")
    snapshot = _snapshot(loc, settings, [glob.escape(loc.path) + "/*"], command)
    folder = snapshot / loc.path
    if not folder.is_dir():
        if settings.is_offline():
            raise _not_cached(loc, f"folder {loc.path!r} is not in the Hugging Face cache", settings, command)
        raise HubError(f"{loc.url}: {loc.repo} (commit {snapshot.name[:7]}) has no folder {loc.path!r}")
    return Resolved(folder, loc, snapshot.name)


def images_beside(csv: Resolved, settings: HubSettings | None = None) -> Resolved:
    """The photos of a Hub CSV when no folder is named: `images/` beside it if the repo has one, else its folder.

    Offline, a cache holding the CSV but none of the photos it lists is an error saying how to fetch them.
    """
    settings = settings or HubSettings.from_env()
    loc = csv.location
    parent = posixpath.dirname(loc.path)
    images = posixpath.join(parent, "images")
    snapshot = _snapshot(loc, settings, [glob.escape(images) + "/*"], loc.download_command(images + "/"))
    if (snapshot / images).is_dir():
        found = Resolved(snapshot / images, loc.child(images), snapshot.name)
    else:  # the CSV's own folder, not its sub-folders
        prefix = glob.escape(parent) + "/" if parent else ""
        snapshot = _snapshot(loc, settings, [prefix + "*"], loc.download_command(include=(prefix + "*",)),
                             ignore=[prefix + "*/*"])
        found = Resolved(snapshot / parent, loc.child(parent), snapshot.name)
    listed = _listed_files(csv.path)
    if settings.is_offline() and listed and not any((found.path / name).is_file() for name in listed):
        command = loc.download_command(parent + "/") if parent else loc.download_command()
        raise _not_cached(loc, f"the photos it lists are neither in {images}/ nor beside it in the Hugging Face "
                               "cache", settings, command)
    return found


# ------------------------------------------------------------------------------------ internals


def _snapshot(loc: HubLocation, settings: HubSettings, patterns: list[str], command: str,
              ignore: list[str] | None = None) -> Path:
    """The cached snapshot folder holding (at least) the files matching `patterns`, downloading what is missing."""
    from huggingface_hub import snapshot_download

    with _hub_errors(loc, settings, command), _quiet(_NO_MATCH):
        return Path(snapshot_download(loc.repo_id, repo_type=loc.repo_type, revision=loc.revision,
                                      cache_dir=settings.cache_dir, token=settings.token,
                                      local_files_only=settings.offline, allow_patterns=patterns,
                                      ignore_patterns=ignore, endpoint=settings.endpoint))


def _fetch_plan_image(loc: HubLocation, settings: HubSettings, snapshot: Path, model_dir: Path) -> None:
    """plan.json may name its image (`"image"`); fetch it when it is not the plan.png already downloaded."""
    from huggingface_hub import hf_hub_download

    from geomodel.plan import PLAN_FILE, read_plan

    plan = model_dir / PLAN_FILE
    if not plan.is_file():
        return
    try:
        image = read_plan(plan).image
    except DataError:
        return  # the app's own plan loading reports a broken plan.json
    if (model_dir / image).is_file():
        return
    name = f"{loc.path}/{image}" if loc.path else image
    with _hub_errors(loc.child(name), settings, loc.download_command(name)):
        hf_hub_download(loc.repo_id, name, repo_type=loc.repo_type, revision=snapshot.name,
                        cache_dir=settings.cache_dir, token=settings.token, local_files_only=settings.offline,
                        endpoint=settings.endpoint)


# huggingface_hub logs "No files matched allow_patterns=..." for a repo without the model's files;
# resolve_model says it better, in its one-line error.
_NO_MATCH = ("huggingface_hub._snapshot_download", "No files matched")


@contextlib.contextmanager
def _quiet(what: tuple[str, str]) -> Iterator[None]:
    """Drop the log records of logger `what[0]` that start with `what[1]`, for the duration."""
    logger = logging.getLogger(what[0])

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(what[1])

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


@contextlib.contextmanager
def _hub_errors(loc: HubLocation, settings: HubSettings, command: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one-line HubErrors that say what to do."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    page = f"https://huggingface.co/{'datasets/' if loc.repo_type == 'dataset' else ''}{loc.repo_id}"
    try:
        yield
    except RevisionNotFoundError:
        raise HubError(f"{loc.url}: revision {loc.revision!r} does not exist in {loc.repo_type} {loc.repo_id}; "
                       f"name one of its branches, tags or commits ({page})") from None
    except GatedRepoError:
        raise HubError(f"{loc.url}: {loc.repo_type} {loc.repo_id} is gated: accept its conditions on {page} and "
                       f"set HF_TOKEN to a token of that account ({TOKENS_PAGE})") from None
    except RepositoryNotFoundError:
        if settings.sends_token():
            raise HubError(f"{loc.url}: {loc.repo_type} {loc.repo_id} was not found on the Hub, or the token in "
                           "HF_TOKEN cannot read it; check the name and the token's access") from None
        raise HubError(f"{loc.url}: {loc.repo_type} {loc.repo_id} was not found on the Hub, or it is private: "
                       f"set HF_TOKEN to a token that can read it ({TOKENS_PAGE})") from None
    except RemoteEntryNotFoundError:
        raise HubError(f"{loc.url}: {loc.repo} has no file {loc.path!r}") from None
    except LocalEntryNotFoundError as exc:  # also IncompleteSnapshotError: nothing (or not all) cached
        raise _not_cached(loc, "not in the Hugging Face cache", settings, command,
                          None if settings.is_offline() else _reason(exc)) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:  # a token was sent and refused ("Invalid credentials in Authorization header")
            raise HubError(f"{loc.url}: the Hub refused the token in HF_TOKEN (invalid credentials); set HF_TOKEN "
                           f"to a valid read token ({TOKENS_PAGE}), or unset it for a public repo") from None
        raise HubError(f"{loc.url}: the Hub answered {status or 'an error'} ({_first_line(exc)})") from None
    except OSError as exc:  # a proxy refusing, a full disk while downloading, ...
        raise HubError(f"{loc.url}: {_first_line(exc)}") from None


def _not_cached(loc: HubLocation, what: str, settings: HubSettings, command: str,
                unreachable: str | None = None) -> HubError:
    """`what` is missing from the cache and cannot be fetched now: say where to run which `hf download`."""
    why = f"the Hub could not be reached ({unreachable})" if unreachable else "HF_HUB_OFFLINE=1 forbids fetching it"
    return HubError(f"{loc.url}: {what} at {settings.cache_path()}, and {why}; where the Hub is reachable run: "
                    f"{command}")


def _listed_files(csv_path: Path, limit: int = 50) -> list[str]:
    """The first `filename` cells of a labels CSV (the full check is `read_labels`, when the explorer loads it)."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = csv.DictReader(fh)
            return [row["filename"] for row, _ in zip(rows, range(limit)) if row.get("filename")]
    except (OSError, ValueError, KeyError, csv.Error):
        return []


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    return f"{type(cause).__name__}: {_first_line(cause)}" if cause is not None else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
