"""Test helpers for `hf://` settings: a Hub cache laid out on disk, and a local Hub server.

`lay_out_cache` writes the layout huggingface_hub reads with HF_HUB_OFFLINE=1 (see its
`file_download.py`): `CACHE/models--OWNER--NAME/` (`datasets--OWNER--NAME/` for datasets) holding
`refs/REVISION` (the commit hash, no newline), `blobs/ETAG` (the content; the etag is the sha256 for
LFS files, the git blob sha1 for the others) and `snapshots/COMMIT/PATH`, a relative symlink to the blob.

`FakeHub` is a real HTTP server on 127.0.0.1 that speaks the part of the Hub API huggingface_hub's
downloads call, with the Hub's error answers (X-Error-Code / X-Error-Message headers; 401 for an
unknown or private repo without a token, as the Hub does), pointed to with HF_ENDPOINT:
  GET  /api/{models,datasets}/OWNER/NAME/revision/REV      repo_info
  GET  /api/{models,datasets}/OWNER/NAME/tree/REV[/PATH]   list_repo_tree
  HEAD|GET /[datasets/]OWNER/NAME/resolve/REV/PATH         file metadata and content
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".pt", ".png", ".jpg", ".jpeg")  # the Hub's default .gitattributes sends these to LFS


def etag_of(path: str, data: bytes) -> str:
    if path.lower().endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


def commit_of(files: dict[str, bytes]) -> str:
    h = hashlib.sha1()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return h.hexdigest()


def read_folder(folder: Path, prefix: str = "") -> dict[str, bytes]:
    """Every file under `folder`, keyed by its repo path (`prefix/relative/path`)."""
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def lay_out_cache(cache: Path, repo_type: str, repo_id: str, files: dict[str, bytes], *,
                  revision: str = "main", commit: str | None = None) -> str:
    """Write `files` as one cached snapshot of a repo (at `revision`); returns its commit hash."""
    storage = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = commit or commit_of(files)
    for path, data in files.items():
        blob = storage / "blobs" / etag_of(path, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        pointer = storage / "snapshots" / commit / path
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    return commit


def cache_layout(cache: Path) -> set[str]:
    """The cache's refs, snapshot entries (with their link targets) and blobs, to compare two caches."""
    out = set()
    for p in cache.rglob("*"):
        rel = p.relative_to(cache).as_posix()
        if "/snapshots/" in rel and p.is_symlink():
            out.add(f"{rel} -> {os.readlink(p)}")
        elif "/refs/" in rel or ("/blobs/" in rel and p.is_file()):
            out.add(rel + (f" = {p.read_text()}" if "/refs/" in rel else ""))
    return out


@dataclass
class Repo:
    files: dict[str, bytes]
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit

    @property
    def commit(self) -> str:
        return commit_of(self.files)


class FakeHub:
    """A local Hub: `add(...)` repos, `url` for HF_ENDPOINT, `requests` lists what was asked (method, path)."""

    def __init__(self, tokens: tuple[str, ...] = ("hf_valid_test_token",)) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.tokens = set(tokens)
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                hub._answer(self, body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                hub._answer(self, body=False)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo_type: str, repo_id: str, files: dict[str, bytes], *, private: bool = False,
            tags: tuple[str, ...] = ()) -> str:
        repo = Repo(files, private)
        repo.refs = {name: repo.commit for name in ("main", *tags)}
        self.repos[(repo_type, repo_id)] = repo
        return repo.commit

    def downloaded(self) -> list[str]:
        """Repo paths whose content was fetched (GET .../resolve/...)."""
        return sorted(re.sub(r"^.*?/resolve/[^/]+/", "", p) for m, p in self.requests if m == "GET" and "/resolve/" in p)

    # -------------------------------------------------------------------------------- serving

    def _answer(self, h: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path))
        api = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?", path)
        res = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if api:
            repo_type, repo_id, what, rev, sub = api.group(1)[:-1], api.group(2), api.group(3), api.group(4), api.group(5)
        elif res:
            repo_type, repo_id, what, rev, sub = "dataset" if res.group(1) else "model", res.group(2), "resolve", \
                res.group(3), res.group(4)
        else:
            return self._send(h, 404, {}, b"Not Found", body)
        auth = h.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth else None
        if token is not None and token not in self.tokens:  # the Hub checks the token first, even for public repos
            return self._send(h, 401, {"X-Error-Message": "Invalid credentials in Authorization header"},
                              b'{"error":"Invalid credentials in Authorization header"}', body)
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and token is None):
            return self._send(h, 401 if token is None else 404, {"X-Error-Code": "RepoNotFound",
                                                                 "X-Error-Message": "Repository not found"},
                              b'{"error":"Repository not found"}', body)
        commit = repo.refs.get(rev) or (rev if rev == repo.commit else None)
        if commit is None:
            return self._send(h, 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": f"Invalid rev id: {rev}"},
                              f'{{"error":"Invalid rev id: {rev}"}}'.encode(), body)
        if what == "revision":
            info = {"id": repo_id, "sha": commit, "private": repo.private,
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
            return self._send(h, 200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body)
        if what == "tree":
            prefix = (sub or "").strip("/")
            entries = [self._tree_entry(p, d) for p, d in sorted(repo.files.items())
                       if not prefix or p.startswith(prefix + "/")]
            return self._send(h, 200, {"Content-Type": "application/json"}, json.dumps(entries).encode(), body)
        data = repo.files.get(sub)
        if data is None:
            return self._send(h, 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                       "X-Repo-Commit": commit}, b'{"error":"Entry not found"}', body)
        etag = etag_of(sub, data)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
        if sub.lower().endswith(LFS_SUFFIXES):
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        return self._send(h, 200, headers, data, body)

    @staticmethod
    def _tree_entry(path: str, data: bytes) -> dict:
        entry = {"type": "file", "path": path, "size": len(data),
                 "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
        if path.lower().endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, headers: dict, data: bytes, body: bool) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)
