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
architectures Ollama converts adapters of; other bases need the adapter merged first. A
LoRA trained on a model installed in Ollama (an ``ollama:NAME`` base) is published as
``FROM NAME`` plus the adapter (``from_model``): the installed model is reused, nothing of
the base is uploaded.
The create API used here (``files`` / ``adapters`` / ``from``) needs Ollama 0.5.5 or newer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from services.publish.artifact import (
    Kind,
    architecture,
    check_artifact,
    check_kind,
    ollama_files,
)
from services.publish.errors import PublishError
from services.publish.modelfile import render_modelfile, served_fields
from services.publish.names import (
    LATEST_TAG,
    model_base,
    normalise_part,
    profile_versions,
    version_tag,
)
from services.publish.ollama_server import OllamaServer
from services.publish.retention import DEFAULT_KEEP, plan_retention, previous_version
from services.schemas import ChatSchema

log = structlog.get_logger(__name__)

# Hugging Face architectures of base models whose LoRA adapters Ollama converts
# (convert/convert.go, ConvertAdapter: GGUF architectures "llama" and "gemma2").
ADAPTER_ARCHITECTURES = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Gemma2ForCausalLM"})
# The same, as the GGUF architectures of models installed in Ollama.
ADAPTER_GGUF_ARCHITECTURES = frozenset({"llama", "gemma2"})


@dataclass(frozen=True)
class Published:
    """A version created in Ollama: its name, manifest digest and Modelfile equivalent."""

    name: str
    digest: str
    modelfile: str


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
        self._server = OllamaServer(host, timeout=timeout, create_timeout=create_timeout)

    def close(self) -> None:
        self._server.close()

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
        return self._server.check()

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
        from_model: str | None = None,
    ) -> str:
        """The Modelfile that ``ollama create`` would turn into the same model."""
        kind = check_kind(kind)
        comments = []
        if name:
            quantize = f" --quantize {self.quantize}" if self.quantize else ""
            comments.append(f"ollama create {name}{quantize} -f Modelfile")
        if kind == "lora":
            if base_model_dir is None and from_model is None:
                raise PublishError("a LoRA adapter needs its base model directory")
            source, adapter = from_model or str(base_model_dir), str(artifact_dir)
        else:
            source, adapter = str(artifact_dir), None
        served = served_fields(schema, system, parameters)
        return render_modelfile(source, adapter=adapter, comments=comments, **served)

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
        from_model: str | None = None,
    ) -> Published:
        """Create ``<prefix>-<profile>:v<version>`` and check that it answers.

        ``kind="full"``: ``artifact_dir`` is a merged model (config.json, safetensors,
        tokenizer). ``kind="lora"``: a peft adapter on ``base_model_dir``, or on
        ``from_model``, a model installed in Ollama; PublishError asks for a merged model
        when Ollama cannot take adapters of that base.
        """
        kind = check_kind(kind)
        artifact_dir = Path(artifact_dir)
        name = self.name(profile, version)
        if from_model is not None and kind == "lora":
            check_artifact(artifact_dir, kind)
            problem = self.adapter_base_problem(from_model)
            if problem:
                raise PublishError(problem)
        else:
            self._check_inputs(artifact_dir, kind, base_model_dir)
        files = ollama_files(artifact_dir)
        modelfile = self.modelfile(
            artifact_dir,
            kind=kind,
            base_model_dir=base_model_dir,
            schema=schema,
            system=system,
            parameters=parameters,
            name=name,
            from_model=from_model,
        )
        served = served_fields(schema, system, parameters)
        self._check_new(name)
        log.info("publishing to Ollama", model=name, kind=kind, files=len(files))
        try:
            self._create_version(name, kind, files, base_model_dir, served, from_model)
            self._verify(name, served)
            digest = self._listed_digest(name)
        except PublishError as exc:
            self._discard(name)
            log.warning("publishing to Ollama failed", model=name, error=str(exc))
            raise
        log.info("published to Ollama", model=name, digest=digest)
        return Published(name=name, digest=digest, modelfile=modelfile)

    def _check_inputs(self, artifact_dir: Path, kind: Kind, base_model_dir: Path | None) -> None:
        """The artifact holds what ``kind`` needs; a LoRA's base is one Ollama can take."""
        check_artifact(artifact_dir, kind)
        if kind == "lora":
            if base_model_dir is None:
                raise PublishError("a LoRA adapter needs its base model directory")
            self._check_adapter_base(Path(base_model_dir))

    def _check_new(self, name: str) -> None:
        """The server answers, is recent enough and has no model ``name`` yet."""
        self.check()
        if name in self._server.digests():
            raise PublishError(
                f"{name} already exists in Ollama; versions are never replaced: publish a new "
                "version, or delete this one first if it was never activated"
            )

    def _create_version(
        self,
        name: str,
        kind: str,
        files: Mapping[str, Path],
        base_model_dir: Path | None,
        served: Mapping[str, Any],
        from_model: str | None = None,
    ) -> None:
        """Upload the artifact's files and create ``name`` from them: a full model from
        its files (quantized), an adapter on ``from_model`` or the shared base model."""
        if kind == "full":
            blobs = self._server.upload(files)
            self._server.create(name, files=blobs, quantize=self.quantize, **served)
        else:
            assert base_model_dir is not None or from_model is not None
            base = from_model or self._ensure_base(Path(base_model_dir or ""))
            adapters = self._server.upload(files)
            self._server.create(name, from_=base, adapters=adapters, **served)

    def _verify(self, name: str, served: Mapping[str, Any]) -> None:
        self._server.verify(
            name,
            served["template"],
            served["parameters"],
            prompt=self.verify_prompt,
            tokens=self.verify_tokens,
            keep_alive=self.keep_alive,
        )

    def _listed_digest(self, name: str) -> str:
        digest = self._server.digests().get(name)
        if digest is None:
            raise PublishError(f"{name} was created but Ollama does not list it")
        return digest

    def _check_adapter_base(self, base_model_dir: Path) -> None:
        arch = architecture(base_model_dir)
        if arch not in ADAPTER_ARCHITECTURES:
            supported = ", ".join(sorted(ADAPTER_ARCHITECTURES))
            raise PublishError(
                f"Ollama cannot apply a LoRA adapter to a {arch or 'unknown'} base model "
                f"(it converts adapters of {supported} only): merge the adapter into the "
                "base model and publish the merged model directory (kind='full')"
            )

    def adapter_base_problem(self, model: str) -> str | None:
        """Why Ollama cannot apply a LoRA adapter to its installed ``model``; None when it
        can (its GGUF architecture is one Ollama converts adapters for)."""
        shown = self._server.call(f"show {model}", self._server.client.show, model)
        arch = (shown.modelinfo or {}).get("general.architecture")
        if arch in ADAPTER_GGUF_ARCHITECTURES:
            return None
        supported = ", ".join(sorted(ADAPTER_GGUF_ARCHITECTURES))
        return (
            f"Ollama cannot apply a LoRA adapter to {model}, a {arch or 'unknown'} model (it "
            f"converts adapters of {supported} models only): merge the adapter first"
        )

    def _ensure_base(self, base_model_dir: Path) -> str:
        """The Ollama model made from ``base_model_dir``, created when missing."""
        files = ollama_files(base_model_dir)
        digests = {rel: self._server.sha256(path) for rel, path in files.items()}
        key = hashlib.sha256(
            "\n".join(
                [f"quantize {self.quantize}", *(f"{r} {d}" for r, d in digests.items())]
            ).encode()
        ).hexdigest()[:12]
        name = f"{self.prefix}-base:{key}"
        if name in self._server.digests():
            return name
        log.info("creating the adapters' base model in Ollama", model=name)
        blobs = self._server.upload(files)
        self._server.create(name, files=blobs, quantize=self.quantize)
        return name

    def _discard(self, name: str) -> None:
        """Delete a half-published version (best effort: it is logged when it fails)."""
        try:
            if name in self._server.digests():
                self._server.delete(name)
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
        digests = self._server.digests()
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
            self._server.copy(vname, latest, f"copy {vname} to {latest}")
            now = self._server.digests().get(latest)
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
            now = self._server.digests().get(latest)
            if now == old:
                return f"{latest} is unchanged"
            if old is None:
                self._server.delete(latest)
                return f"{latest} was removed again, as it was before"
            source = self._version_with(profile, old, before)
            if source is None:
                return f"{latest} cannot be restored: no version has its old digest {old}"
            self._server.copy(source, latest, f"copy {source} back to {latest}")
            if self._server.digests().get(latest) != old:
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
        if latest not in self._server.digests():
            return False
        self._server.delete(latest)
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
        return sorted(self._profile_versions(profile, self._server.digests()))

    def active_version(self, profile: str) -> int | None:
        """The version whose digest ``:latest`` has; None when there is no ``:latest``."""
        digests = self._server.digests()
        latest = digests.get(self.name(profile))
        if latest is None:
            return None
        same = [v for v, d in self._profile_versions(profile, digests).items() if d == latest]
        return max(same) if same else None

    def delete(self, profile: str, version: int) -> bool:
        """Delete ``:v<version>``; False when it was not there. Refuses the active one."""
        name = self.name(profile, version)
        digests = self._server.digests()
        if name not in digests:
            return False
        if digests[name] == digests.get(self.name(profile)):
            raise PublishError(f"{name} is the active version; activate another one first")
        self._server.delete(name)
        log.info("deleted a version from Ollama", model=name)
        return True

    def prune(self, profile: str, keep: int = DEFAULT_KEEP) -> list[int]:
        """Delete all but the newest ``keep`` versions (never the active one)."""
        doomed = plan_retention(self.versions(profile), self.active_version(profile), keep)
        for version in doomed:
            self.delete(profile, version)
        return doomed

    def _profile_versions(self, profile: str, digests: Mapping[str, str]) -> dict[int, str]:
        return profile_versions(model_base(self.prefix, profile), digests)


def _listing(versions: list[int]) -> str:
    return ", ".join(f"v{v}" for v in versions) or "none"
