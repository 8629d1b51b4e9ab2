"""A stand-in Hugging Face hub on loopback, for downloads without the real hub.

It serves model directories as repos through the endpoints huggingface_hub (2.4) uses for
``snapshot_download`` and ``hf_hub_download``:

- ``GET /api/models/{repo}[/revision/{rev}]``: the model info (``id``, ``sha``,
  ``siblings``);
- ``GET /api/models/{repo}/tree/{rev}[?recursive=...]``: the file listing (``type``,
  ``path``, ``size``, ``oid``, and ``lfs`` for weights);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: ``X-Repo-Commit``, ``ETag`` (the git blob
  id; for LFS files the sha256 in ``X-Linked-Etag`` with ``X-Linked-Size``),
  ``Content-Length``, ``Accept-Ranges``; a ``Range: bytes=N-`` GET is answered 206 with
  ``Content-Range``.

Errors as the hub sends them: an unknown repo is 401 ``X-Error-Code: RepoNotFound``; an
unknown file 404 ``EntryNotFound``; a gated repo's info and listing are public but its
files are 401 ``GatedRepo``. ``drop_once`` names files whose first full GET sends the
headers and half the body, then closes the connection; ``stall_once`` files' first full
GET sends half the body, then nothing more until the hub stops (a process stopped
midway). Every request is recorded in ``requests`` as ``(method, path, range header or
None)``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pth")


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    sha: str
    gated: bool = False

    @classmethod
    def of_dir(cls, path: Path, gated: bool = False) -> Repo:
        files = {
            str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
        }
        digest = hashlib.sha1(b"".join(hashlib.sha1(v).digest() for v in files.values()))
        return cls(files, digest.hexdigest(), gated)


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    drop_once: set[str] = field(default_factory=set)
    stall_once: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def ranges(self, filename: str) -> list[str]:
        """The Range headers of the GETs of ``filename``."""
        return [
            r
            for m, p, r in self.requests
            if m == "GET" and p.endswith("/" + filename) and r is not None
        ]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._route(body=True)

    def do_HEAD(self) -> None:
        self._route(body=False)

    # -- routing --------------------------------------------------------------------
    def _route(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.fake.requests.append((self.command, path, self.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            rest = parts[4:]
            repo = self._repo(repo_id)
            if repo is None:
                return
            if not rest or rest[0] == "revision":
                self._json(self._info(repo_id, repo))
            elif rest[0] == "tree":
                self._json(self._tree(repo))
            else:
                self._error(404, "EntryNotFound", "no such endpoint")
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id = "/".join(parts[:2])
            repo = self._repo(repo_id)
            if repo is None:
                return
            if repo.gated:
                msg = f"Access to model {repo_id} is restricted. You must have access to it."
                self._error(401, "GatedRepo", msg)
                return
            self._file(repo, "/".join(parts[4:]), body)
            return
        self._error(404, None, "not found")

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
        return repo

    # -- answers --------------------------------------------------------------------
    def _info(self, repo_id: str, repo: Repo) -> dict[str, Any]:
        return {
            "_id": repo.sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": False,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "tags": ["safetensors"],
            "siblings": [{"rfilename": name} for name in repo.files],
        }

    def _tree(self, repo: Repo) -> list[dict[str, Any]]:
        out = []
        for name, data in repo.files.items():
            entry: dict[str, Any] = {
                "type": "file",
                "oid": _blob_id(data),
                "size": len(data),
                "path": name,
            }
            if name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            out.append(entry)
        return out

    def _file(self, repo: Repo, name: str, body: bool) -> None:
        data = repo.files.get(name)
        if data is None:
            self._error(404, "EntryNotFound", f"{name} does not exist")
            return
        headers = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
        if name.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            headers |= {"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))}
            headers["ETag"] = f'"{sha}"'
        else:
            headers["ETag"] = f'"{_blob_id(data)}"'
        start = 0
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and body:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
        status = 206 if start else 200
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not body:
            return
        if not start and name in self.fake.drop_once and name not in self.fake.dropped:
            self.fake.dropped.append(name)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # SHUT_RDWR: the client sees the body cut short
            return
        if not start and name in self.fake.stall_once and name not in self.fake.dropped:
            self.fake.dropped.append(name)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.fake._stopped.wait(60)
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def _json(self, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code is not None:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
