"""Publishing to an Ollama server: ``<prefix>-<profile>:v<N>``, then ``:latest``.

``publish`` uploads the artifact's files as blobs (each one only when the server lacks
it), creates ``:v<N>`` from them with the family's template, system prompt and
parameters (stop tokens included), checks that the server reports that template and
that a short generation answers, and deletes the version again when any of this fails.
``activate`` copies ``:v<N>`` to ``:latest`` and checks that both digests agree; on
failure ``:latest`` is put back to the version it named before. Nothing named
``:latest`` changes before ``activate``.

A LoRA adapter is published as an Ollama adapter on a base model created from the base
model directory (``<prefix>-base:<digest>``, shared by every profile), for the base
architectures Ollama converts adapters of; other bases need the adapter merged first.
The create API used here (``files`` / ``adapters`` / ``from``) needs Ollama 0.5.5 or newer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import ollama
import structlog

from services.publish.artifact import (
    architecture,
    check_artifact,
    check_kind,
    ollama_files,
    sha256_file,
)
from services.publish.errors import PublishError
from services.publish.modelfile import render_modelfile, served_parameters, served_system
from services.publish.names import (
    LATEST_TAG,
    model_base,
    normalise_part,
    parse_version_tag,
    version_tag,
)
from services.publish.retention import DEFAULT_KEEP, plan_retention, previous_version
from services.schemas import ChatSchema

log = structlog.get_logger(__name__)

T = TypeVar("T")

MIN_VERSION = (0, 5, 5)
# Hugging Face architectures of base models whose LoRA adapters Ollama converts
# (convert/convert.go, ConvertAdapter: GGUF architectures "llama" and "gemma2").
ADAPTER_ARCHITECTURES = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Gemma2ForCausalLM"})
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class Published:
    """A version created in Ollama: its name, manifest digest and Modelfile equivalent."""

    name: str
    digest: str
    modelfile: str


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _SEMVER.match(text.strip())
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


class OllamaPublisher:
    """Publishes, activates and deletes a profile's versions on one Ollama server.

    ``timeout`` bounds ordinary requests; ``create_timeout`` the slow ones (blob uploads,
    creates, the test generation, which loads the model). ``quantize`` applies to full
    models and to adapters' base models (None: keep F16).
    """

    def __init__(
        self,
        host: str,
        prefix: str,
        *,
        quantize: str | None = "q8_0",
        timeout: float = 30.0,
        create_timeout: float | None = 3600.0,
        verify_prompt: str = "Hello",
        verify_tokens: int = 16,
        keep_alive: float | str = 0,
    ) -> None:
        self.host = host
        self.prefix = normalise_part(prefix, "prefix")
        self.quantize = quantize
        self.timeout = timeout
        self.verify_prompt = verify_prompt
        self.verify_tokens = verify_tokens
        self.keep_alive = keep_alive
        self._client = ollama.Client(host=host, timeout=timeout)
        self._slow = ollama.Client(host=host, timeout=create_timeout)
        self._digest_cache: dict[tuple[str, int, int], str] = {}

    def close(self) -> None:
        self._client.close()
        self._slow.close()

    def __enter__(self) -> OllamaPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- names --

    def name(self, profile: str, version: int | None = None) -> str:
        """``<prefix>-<profile>:v<version>``, or ``:latest`` when ``version`` is None."""
        tag = LATEST_TAG if version is None else version_tag(version)
        return f"{model_base(self.prefix, profile)}:{tag}"

    # -- the server --

    def check(self) -> str:
        """The server's version; PublishError when it does not answer or is too old."""
        response = self._call(
            "ask Ollama its version", self._client._request_raw, "GET", "/api/version"
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

    # -- the Modelfile --

    def modelfile(
        self,
        artifact_dir: Path,
        *,
        kind: str,
        base_model_dir: Path | None = None,
        schema: ChatSchema,
        system: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> str:
        """The Modelfile that ``ollama create`` would turn into the same model."""
        kind = check_kind(kind)
        comments = []
        if name:
            quantize = f" --quantize {self.quantize}" if self.quantize else ""
            comments.append(f"ollama create {name}{quantize} -f Modelfile")
        if kind == "lora":
            if base_model_dir is None:
                raise PublishError("a LoRA adapter needs its base model directory")
            source, adapter = str(base_model_dir), str(artifact_dir)
        else:
            source, adapter = str(artifact_dir), None
        return render_modelfile(
            source,
            adapter=adapter,
            template=schema.ollama_template,
            system=served_system(schema, system),
            parameters=served_parameters(schema, parameters),
            comments=comments,
        )

    # -- publishing --

    def publish(
        self,
        profile: str,
        version: int,
        artifact_dir: Path,
        *,
        kind: str,
        base_model_dir: Path | None = None,
        schema: ChatSchema,
        system: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Published:
        """Create ``<prefix>-<profile>:v<version>`` and check that it answers.

        ``kind="full"``: ``artifact_dir`` is a merged model (config.json, safetensors,
        tokenizer). ``kind="lora"``: a peft adapter on ``base_model_dir``; PublishError
        asks for a merged model when Ollama cannot take adapters of that base.
        """
        kind = check_kind(kind)
        artifact_dir = Path(artifact_dir)
        name = self.name(profile, version)
        check_artifact(artifact_dir, kind)
        if kind == "lora":
            if base_model_dir is None:
                raise PublishError("a LoRA adapter needs its base model directory")
            self._check_adapter_base(Path(base_model_dir))
        files = ollama_files(artifact_dir)
        modelfile = self.modelfile(
            artifact_dir,
            kind=kind,
            base_model_dir=base_model_dir,
            schema=schema,
            system=system,
            parameters=parameters,
            name=name,
        )
        template = schema.ollama_template
        served_sys = served_system(schema, system)
        params = served_parameters(schema, parameters)

        self.check()
        if name in self._digests():
            raise PublishError(
                f"{name} already exists in Ollama; versions are never replaced: publish a new "
                "version, or delete this one first if it was never activated"
            )
        log.info("publishing to Ollama", model=name, kind=kind, files=len(files))
        try:
            if kind == "full":
                blobs = self._upload(files)
                self._create(
                    name,
                    files=blobs,
                    quantize=self.quantize,
                    template=template,
                    system=served_sys,
                    parameters=params,
                )
            else:
                assert base_model_dir is not None
                base = self._ensure_base(Path(base_model_dir))
                adapters = self._upload(files)
                self._create(
                    name,
                    from_=base,
                    adapters=adapters,
                    template=template,
                    system=served_sys,
                    parameters=params,
                )
            self._verify(name, template, params)
            digest = self._digests().get(name)
            if digest is None:
                raise PublishError(f"{name} was created but Ollama does not list it")
        except PublishError as exc:
            self._discard(name)
            log.warning("publishing to Ollama failed", model=name, error=str(exc))
            raise
        log.info("published to Ollama", model=name, digest=digest)
        return Published(name=name, digest=digest, modelfile=modelfile)

    def _check_adapter_base(self, base_model_dir: Path) -> None:
        arch = architecture(base_model_dir)
        if arch not in ADAPTER_ARCHITECTURES:
            supported = ", ".join(sorted(ADAPTER_ARCHITECTURES))
            raise PublishError(
                f"Ollama cannot apply a LoRA adapter to a {arch or 'unknown'} base model "
                f"(it converts adapters of {supported} only): merge the adapter into the "
                "base model and publish the merged model directory (kind='full')"
            )

    def _ensure_base(self, base_model_dir: Path) -> str:
        """The Ollama model made from ``base_model_dir``, created when missing."""
        files = ollama_files(base_model_dir)
        digests = {rel: self._sha256(path) for rel, path in files.items()}
        key = hashlib.sha256(
            "\n".join(
                [f"quantize {self.quantize}", *(f"{r} {d}" for r, d in digests.items())]
            ).encode()
        ).hexdigest()[:12]
        name = f"{self.prefix}-base:{key}"
        if name in self._digests():
            return name
        log.info("creating the adapters' base model in Ollama", model=name)
        blobs = self._upload(files)
        self._create(name, files=blobs, quantize=self.quantize)
        return name

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._digest_cache:
            self._digest_cache[key] = sha256_file(path)
        return self._digest_cache[key]

    def _upload(self, files: Mapping[str, Path]) -> dict[str, str]:
        """Upload each file the server lacks; returns {relative name: digest}."""
        blobs: dict[str, str] = {}
        for rel, path in files.items():
            digest = self._sha256(path)
            if self._has_blob(digest):
                log.debug("blob already on the server", file=rel, digest=digest)
            else:
                with path.open("rb") as fh:
                    self._call(
                        f"upload {rel} to Ollama",
                        self._slow._request_raw,
                        "POST",
                        f"/api/blobs/{digest}",
                        content=fh,
                    )
                log.debug("uploaded a blob", file=rel, digest=digest)
            blobs[rel] = digest
        return blobs

    def _has_blob(self, digest: str) -> bool:
        try:
            self._client._request_raw("HEAD", f"/api/blobs/{digest}")
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                return False
            raise self._server_error(f"ask Ollama for blob {digest}", exc) from exc
        except (ConnectionError, httpx.HTTPError) as exc:
            raise self._transport_error(f"ask Ollama for blob {digest}", exc) from exc
        return True

    def _create(self, name: str, **request: Any) -> None:
        action = f"create {name} in Ollama"
        last = None
        try:
            for part in self._slow.create(model=name, stream=True, **request):
                if part.status != last:
                    log.debug("ollama create", model=name, status=part.status)
                last = part.status
        except ollama.ResponseError as exc:
            raise self._server_error(action, exc) from exc
        except (ConnectionError, httpx.HTTPError) as exc:
            raise self._transport_error(action, exc) from exc
        if last != "success":
            raise PublishError(f"{action}: the server stopped without success (last: {last!r})")

    def _verify(self, name: str, template: str, parameters: Mapping[str, Any]) -> None:
        shown = self._call(f"show {name}", self._client.show, name)
        if (shown.template or "") != template:
            raise PublishError(
                f"{name}: Ollama serves a different template than the one published "
                f"({(shown.template or '')[:80]!r} instead of {template[:80]!r})"
            )
        reported = shown.parameters or ""
        for stop in parameters.get("stop") or []:
            if stop.isprintable() and '"' not in stop and "\\" not in stop and stop not in reported:
                raise PublishError(f"{name}: Ollama does not report the stop token {stop!r}")
        answer = self._call(
            f"test {name} with a short generation",
            self._slow.generate,
            model=name,
            prompt=self.verify_prompt,
            options={"num_predict": self.verify_tokens},
            keep_alive=self.keep_alive,
            stream=False,
        )
        if not (answer.response or "").strip():
            raise PublishError(f"{name}: the test generation answered no text")

    def _discard(self, name: str) -> None:
        """Delete a half-published version (best effort: it is logged when it fails)."""
        try:
            if name in self._digests():
                self._call(f"delete {name}", self._client.delete, name)
                log.info("deleted a half-published version", model=name)
        except PublishError as exc:
            log.warning("cannot delete a half-published version", model=name, error=str(exc))

    # -- activation --

    def activate(self, profile: str, version: int) -> str:
        """Copy ``:v<version>`` to ``:latest`` and check the digests; returns the digest.

        On failure ``:latest`` is put back to what it was (or removed when it was absent)
        and PublishError says what failed and what was restored.
        """
        vname, latest = self.name(profile, version), self.name(profile)
        digests = self._digests()
        target = digests.get(vname)
        if target is None:
            raise PublishError(
                f"cannot activate {vname}: Ollama has no such model; published: "
                f"{_listing(self.versions(profile))}"
            )
        old = digests.get(latest)
        if old == target:
            return target
        try:
            self._call(f"copy {vname} to {latest}", self._client.copy, vname, latest)
            now = self._digests().get(latest)
            if now != target:
                raise PublishError(
                    f"after copying {vname} to {latest}, {latest} has digest {now} but {vname} "
                    f"has {target}"
                )
        except PublishError as exc:
            note = self._restore(profile, latest, old, digests)
            raise PublishError(
                f"{exc}; {note}", server_error=exc.server_error, status=exc.status
            ) from exc
        log.info("activated in Ollama", model=vname, alias=latest, digest=target)
        return target

    def _restore(self, profile: str, latest: str, old: str | None, before: dict[str, str]) -> str:
        """Put ``latest`` back to digest ``old``; says what became of it."""
        try:
            now = self._digests().get(latest)
            if now == old:
                return f"{latest} is unchanged"
            if old is None:
                self._call(f"delete {latest}", self._client.delete, latest)
                return f"{latest} was removed again, as it was before"
            source = self._version_with(profile, old, before)
            if source is None:
                return f"{latest} cannot be restored: no version has its old digest {old}"
            self._call(f"copy {source} back to {latest}", self._client.copy, source, latest)
            if self._digests().get(latest) != old:
                return f"{latest} could not be restored to {source}"
            return f"{latest} was restored to {source}"
        except PublishError as exc:
            log.error("cannot restore the latest alias", model=latest, error=str(exc))
            return f"restoring {latest} failed too: {exc}"

    def _version_with(self, profile: str, digest: str, digests: Mapping[str, str]) -> str | None:
        matches = [v for v, d in self._profile_versions(profile, digests).items() if d == digest]
        return self.name(profile, max(matches)) if matches else None

    def deactivate(self, profile: str) -> bool:
        """Delete ``:latest``: no version is active. False when there was none."""
        latest = self.name(profile)
        if latest not in self._digests():
            return False
        self._call(f"delete {latest}", self._client.delete, latest)
        log.info("no version active in Ollama", alias=latest)
        return True

    def rollback(self, profile: str, to: int | None = None) -> int:
        """Activate ``to``, or the newest version older than the active one; returns it."""
        if to is None:
            to = previous_version(self.versions(profile), self.active_version(profile))
            if to is None:
                raise PublishError(f"profile {profile!r} has no version older than the active one")
        self.activate(profile, to)
        return to

    # -- reading, deleting --

    def versions(self, profile: str) -> list[int]:
        """The profile's versions on the server, ascending."""
        return sorted(self._profile_versions(profile, self._digests()))

    def active_version(self, profile: str) -> int | None:
        """The version whose digest ``:latest`` has; None when there is no ``:latest``."""
        digests = self._digests()
        latest = digests.get(self.name(profile))
        if latest is None:
            return None
        same = [v for v, d in self._profile_versions(profile, digests).items() if d == latest]
        return max(same) if same else None

    def delete(self, profile: str, version: int) -> bool:
        """Delete ``:v<version>``; False when it was not there. Refuses the active one."""
        name = self.name(profile, version)
        digests = self._digests()
        if name not in digests:
            return False
        if digests[name] == digests.get(self.name(profile)):
            raise PublishError(f"{name} is the active version; activate another one first")
        self._call(f"delete {name}", self._client.delete, name)
        log.info("deleted a version from Ollama", model=name)
        return True

    def prune(self, profile: str, keep: int = DEFAULT_KEEP) -> list[int]:
        """Delete all but the newest ``keep`` versions (never the active one)."""
        doomed = plan_retention(self.versions(profile), self.active_version(profile), keep)
        for version in doomed:
            self.delete(profile, version)
        return doomed

    def _profile_versions(self, profile: str, digests: Mapping[str, str]) -> dict[int, str]:
        base = model_base(self.prefix, profile)
        found = {}
        for name, digest in digests.items():
            model, _, tag = name.partition(":")
            if model == base and (n := parse_version_tag(tag)) is not None:
                found[n] = digest
        return found

    def _digests(self) -> dict[str, str]:
        """{lower-case ``name:tag``: digest} of every model the server lists."""
        listed = self._call("list Ollama's models", self._client.list)
        out = {}
        for model in listed.models:
            if model.model and model.digest:
                name = model.model.lower()
                if ":" not in name.rsplit("/", 1)[-1]:
                    name += f":{LATEST_TAG}"
                out[name] = model.digest
        return out

    # -- errors --

    def _call(self, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except ollama.ResponseError as exc:
            raise self._server_error(action, exc) from exc
        except (ConnectionError, httpx.HTTPError) as exc:
            raise self._transport_error(action, exc) from exc

    def _server_error(self, action: str, exc: ollama.ResponseError) -> PublishError:
        status = exc.status_code if exc.status_code > 0 else None
        code = f" (HTTP {status})" if status else ""
        return PublishError(
            f"{action}: Ollama answered{code}: {exc.error}", server_error=exc.error, status=status
        )

    def _transport_error(self, action: str, exc: Exception) -> PublishError:
        if isinstance(exc, httpx.TimeoutException):
            return PublishError(f"{action}: Ollama at {self.host} did not answer in time ({exc})")
        return PublishError(
            f"{action}: cannot reach Ollama at {self.host}; is `ollama serve` running at "
            f"{self.host}? ({exc})"
        )


def _listing(versions: list[int]) -> str:
    return ", ".join(f"v{v}" for v in versions) or "none"
