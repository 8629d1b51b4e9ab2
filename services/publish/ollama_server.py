"""One Ollama server as publishing uses it: its requests with their errors translated.

``OllamaServer`` holds two clients (``timeout`` for ordinary requests, ``create_timeout``
for the slow ones: blob uploads, creates, a test generation, which loads the model) and
turns every failure of a request into a ``PublishError`` that names the action, what the
server answered (``server_error``, ``status``) or why it could not be reached. It uploads
blobs the server lacks (each file hashed once per size and mtime), runs a streamed create
to its ``success``, lists the models' digests and checks the server's version.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import ollama
import structlog

from services.publish.artifact import sha256_file
from services.publish.errors import PublishError
from services.publish.names import LATEST_TAG

log = structlog.get_logger(__name__)

T = TypeVar("T")

MIN_VERSION = (0, 5, 5)
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _SEMVER.match(text.strip())
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


class OllamaServer:
    """The requests publishing makes to one Ollama server; failures are PublishError."""

    def __init__(self, host: str, *, timeout: float, create_timeout: float | None) -> None:
        self.host = host
        self.client = ollama.Client(host=host, timeout=timeout)
        self.slow = ollama.Client(host=host, timeout=create_timeout)
        self._digest_cache: dict[tuple[str, int, int], str] = {}

    def close(self) -> None:
        self.client.close()
        self.slow.close()

    def call(self, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, its failure a PublishError that says ``action``."""
        try:
            return fn(*args, **kwargs)
        except ollama.ResponseError as exc:
            raise self.server_error(action, exc) from exc
        except (ConnectionError, httpx.HTTPError) as exc:
            raise self.transport_error(action, exc) from exc

    def server_error(self, action: str, exc: ollama.ResponseError) -> PublishError:
        status = exc.status_code if exc.status_code > 0 else None
        code = f" (HTTP {status})" if status else ""
        return PublishError(
            f"{action}: Ollama answered{code}: {exc.error}", server_error=exc.error, status=status
        )

    def transport_error(self, action: str, exc: Exception) -> PublishError:
        if isinstance(exc, httpx.TimeoutException):
            return PublishError(f"{action}: Ollama at {self.host} did not answer in time ({exc})")
        return PublishError(
            f"{action}: cannot reach Ollama at {self.host}; is `ollama serve` running at "
            f"{self.host}? ({exc})"
        )

    # -- the server --

    def check(self) -> str:
        """The server's version; PublishError when it does not answer or is too old."""
        response = self.call(
            "ask Ollama its version", self.client._request_raw, "GET", "/api/version"
        )
        try:
            version = str(response.json()["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PublishError(
                f"{self.host} did not answer /api/version like Ollama: {response.text[:200]!r}"
            ) from exc
        parsed = parse_version(version)
        if parsed is not None and parsed != (0, 0, 0) and parsed < MIN_VERSION:
            need = ".".join(map(str, MIN_VERSION))
            raise PublishError(
                f"Ollama {version} at {self.host} is too old: publishing needs {need} or newer "
                "(the create API with files and adapters); upgrade Ollama"
            )
        return version

    def digests(self) -> dict[str, str]:
        """{lower-case ``name:tag``: digest} of every model the server lists."""
        listed = self.call("list Ollama's models", self.client.list)
        out = {}
        for model in listed.models:
            if model.model and model.digest:
                name = model.model.lower()
                if ":" not in name.rsplit("/", 1)[-1]:
                    name += f":{LATEST_TAG}"
                out[name] = model.digest
        return out

    # -- blobs and creates --

    def sha256(self, path: Path) -> str:
        """The file's sha256, computed once per (path, size, mtime)."""
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._digest_cache:
            self._digest_cache[key] = sha256_file(path)
        return self._digest_cache[key]

    def upload(self, files: Mapping[str, Path]) -> dict[str, str]:
        """Upload each file the server lacks; returns {relative name: digest}."""
        blobs: dict[str, str] = {}
        for rel, path in files.items():
            digest = self.sha256(path)
            if self._has_blob(digest):
                log.debug("blob already on the server", file=rel, digest=digest)
            else:
                with path.open("rb") as fh:
                    self.call(
                        f"upload {rel} to Ollama",
                        self.slow._request_raw,
                        "POST",
                        f"/api/blobs/{digest}",
                        content=fh,
                    )
                log.debug("uploaded a blob", file=rel, digest=digest)
            blobs[rel] = digest
        return blobs

    def _has_blob(self, digest: str) -> bool:
        try:
            self.client._request_raw("HEAD", f"/api/blobs/{digest}")
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                return False
            raise self.server_error(f"ask Ollama for blob {digest}", exc) from exc
        except (ConnectionError, httpx.HTTPError) as exc:
            raise self.transport_error(f"ask Ollama for blob {digest}", exc) from exc
        return True

    def create(self, name: str, **request: Any) -> None:
        """Create model ``name`` (the create API's fields in ``request``), streamed to its
        ``success``."""
        action = f"create {name} in Ollama"
        last = None
        try:
            for part in self.slow.create(model=name, stream=True, **request):
                if part.status != last:
                    log.debug("ollama create", model=name, status=part.status)
                last = part.status
        except ollama.ResponseError as exc:
            raise self.server_error(action, exc) from exc
        except (ConnectionError, httpx.HTTPError) as exc:
            raise self.transport_error(action, exc) from exc
        if last != "success":
            raise PublishError(f"{action}: the server stopped without success (last: {last!r})")

    def verify(
        self,
        name: str,
        template: str,
        parameters: Mapping[str, Any],
        *,
        prompt: str,
        tokens: int,
        keep_alive: float | str,
    ) -> None:
        """Model ``name`` serves ``template`` and the stop tokens of ``parameters``, and
        answers ``prompt`` with some text within ``tokens`` tokens."""
        shown = self.call(f"show {name}", self.client.show, name)
        if (shown.template or "") != template:
            raise PublishError(
                f"{name}: Ollama serves a different template than the one published "
                f"({(shown.template or '')[:80]!r} instead of {template[:80]!r})"
            )
        reported = shown.parameters or ""
        for stop in parameters.get("stop") or []:
            if stop.isprintable() and '"' not in stop and "\\" not in stop and stop not in reported:
                raise PublishError(f"{name}: Ollama does not report the stop token {stop!r}")
        answer = self.call(
            f"test {name} with a short generation",
            self.slow.generate,
            model=name,
            prompt=prompt,
            options={"num_predict": tokens},
            keep_alive=keep_alive,
            stream=False,
        )
        if not (answer.response or "").strip():
            raise PublishError(f"{name}: the test generation answered no text")

    # -- models --

    def delete(self, name: str) -> None:
        self.call(f"delete {name}", self.client.delete, name)

    def copy(self, source: str, destination: str, action: str) -> None:
        """Copy model ``source`` to ``destination``; ``action`` names it in errors."""
        self.call(action, self.client.copy, source, destination)
