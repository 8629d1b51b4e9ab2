"""The sections of the settings (``[log]``, ``[ingest]``, ``[training]``, ...): one
pydantic model each, every key documented by its ``Field(description=...)``.
:mod:`services.settings` composes them into the one ``Settings`` object."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level written to the log."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="'json' lines (journald), 'console' for people, 'auto': console on a TTY.",
    )


class IngestSettings(_Section):
    debounce_ms: int = Field(
        50, ge=0, le=60_000, description="Quiet time after a file's last event before it is taken."
    )
    settle_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="A file modified without a close event is taken once its size and mtime "
        "have not changed for this long.",
    )
    reconcile_interval_s: float = Field(
        300.0, ge=5, description="Seconds between reconcile scans that catch missed events."
    )
    max_file_mb: float = Field(
        50.0, gt=0, description="Files larger than this are rejected without being read."
    )
    batch_max_files: int = Field(
        256, ge=1, description="Most files parsed in one ledger transaction."
    )


class IndexSettings(_Section):
    chroma_url: str | None = Field(
        None, description="A Chroma server URL; unset: an embedded Chroma under the state dir."
    )
    embedding_provider: Literal["local", "ollama"] = Field(
        "local", description="'local': all-MiniLM-L6-v2 from its package; 'ollama': its embed API."
    )
    embedding_model: str = Field(
        "nomic-embed-text", description="Ollama embedding model (provider 'ollama' only)."
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Texts embedded per batch.")


class SocketSettings(_Section):
    allowed_uids: list[int] = Field(
        default_factory=list,
        description="Uids besides the daemon's own and root that may use the control socket.",
    )
    max_line_bytes: int = Field(
        65536, ge=1024, description="Longest request line accepted; longer ones are refused."
    )
    read_timeout_s: float = Field(
        30.0, gt=0, description="A client idle this long mid-request is disconnected."
    )
    max_connections: int = Field(64, ge=1, description="Concurrent control connections.")


class HttpSettings(_Section):
    enabled: bool = Field(
        True, description="Serve the HTTP API and the dashboard (see `personad dashboard`)."
    )
    listen: str = Field(
        "127.0.0.1:8765",
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
        description="host:port of the HTTP API; port 0 picks a free one. A port in use: the "
        "daemon runs on without HTTP and says so in the log and in `status`.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names besides the listen address (and localhost) that requests may "
        "name in their Host header; the rest are refused (DNS rebinding).",
    )


class OllamaSettings(_Section):
    url: str | None = Field(
        None, description="Ollama server, e.g. http://127.0.0.1:11434; unset: no Ollama."
    )
    prefix: str = Field("personad", description="Model names are '<prefix>-<profile>:vN'.")
    quantize: str | None = Field(
        "q8_0", description="Quantization of published models (e.g. q8_0, q4_K_M); unset: none."
    )
    system: str | None = Field(
        None,
        description="SYSTEM prompt of published models; unset: the persona's system message "
        "the version was trained with.",
    )
    temperature: float | None = Field(
        None, ge=0, description="PARAMETER temperature of published models; unset: Ollama's."
    )
    top_p: float | None = Field(
        None, gt=0, le=1, description="PARAMETER top_p of published models; unset: Ollama's."
    )
    repeat_penalty: float | None = Field(
        None, gt=0, description="PARAMETER repeat_penalty of published models; unset: Ollama's."
    )
    keep_versions: int = Field(
        3, ge=1, description="Published versions kept per profile (the active one always)."
    )
    models_dir: Path | None = Field(
        None,
        description="Ollama's store (manifests/ and blobs/) for 'ollama:NAME' base models, "
        "searched after $OLLAMA_MODELS; then the model's FROM directory, ~/.ollama/models and "
        "/usr/share/ollama/.ollama/models.",
    )


class TrainingSettings(_Section):
    base_model: str = Field(
        "embedded:smollm2",
        description="Base model: a local directory (safetensors + tokenizer), a .gguf file, a "
        "hub id (downloaded when missing), 'ollama:NAME' (a model installed in Ollama), or "
        "'embedded:smollm2' (SmolLM2-135M-Instruct).",
    )
    family: str | None = Field(
        None,
        description="Chat schema family (qwen, llama, phi, gptj, smollm); unset: from the base "
        "model's own chat template.",
    )
    max_samples: int | None = Field(
        None, ge=1, description="Most samples in one training dataset (best first); unset: all."
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Hyperparameters for every job, e.g. {max_steps = 40}; they override "
        "etc/fine-tune-config.json, and a job's own arguments override them.",
    )
    concurrent_jobs: int = Field(
        1, ge=1, le=64, description="Training jobs run at once (one per GPU)."
    )
    prune_run_weights: bool = Field(
        True,
        description="After each job, prune the weights of finished runs "
        "(keep_unpublished_weights); false: every run keeps its checkpoints and artifact.",
    )
    keep_unpublished_weights: int = Field(
        1,
        ge=0,
        description="Finished runs not published (rejected, failed) or whose version was "
        "retired keep their weights (adapter/, model/) only for the newest N per profile; "
        "every finished run's checkpoints/ go. Summaries, evaluation and reports stay.",
    )
    job_timeout_s: float = Field(
        6 * 3600.0, gt=0, description="A training job running longer is stopped and failed."
    )
    memory_limit_mb: int | None = Field(
        None, ge=256, description="Address-space limit of a training process; unset: none."
    )
    max_attempts: int = Field(
        3, ge=1, description="Attempts of a job interrupted by a daemon stop or crash."
    )
    stop_grace_s: float = Field(
        10.0, gt=0, description="Seconds a training process gets after SIGTERM before SIGKILL."
    )
    python: str | None = Field(
        None,
        description="Python interpreter of the training processes (e.g. a separate "
        "environment with CUDA torch); unset: the daemon's own.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Training device: 'auto' uses CUDA when available."
    )
    gpu_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory the planner plans each job for, in GiB (a '24 GB' card: 24); "
        "unset: the GPU's free memory, or without a GPU the RAM available (capped by "
        "memory_limit_mb).",
    )
    launcher: Literal["local", "torchrun"] = Field(
        "local",
        description="How a training child starts: 'local' (one process) or 'torchrun' (one "
        "process per device: DDP for LoRA, FSDP2 for full fine-tunes; rank 0 writes).",
    )
    nproc_per_node: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Processes of a torchrun job; unset: every visible GPU (torchrun counts "
        "them). Required with device = 'cpu'.",
    )

    backend: Literal["local", "ray"] = Field(
        "local",
        description="Where training children run: 'local' (this machine) or 'ray' (jobs on "
        "the Ray cluster at ray_address, which must share the state directory).",
    )
    ray_address: str | None = Field(
        None,
        description="The Ray cluster's job server, e.g. 'http://head:8265' (backend 'ray').",
    )
    ray_gpus: float = Field(
        0, ge=0, description="GPUs a Ray training job asks the cluster for (backend 'ray')."
    )

    @model_validator(mode="after")
    def _launcher_and_backend_complete(self) -> TrainingSettings:
        if self.backend == "ray" and not self.ray_address:
            raise ValueError("backend 'ray' needs training.ray_address (e.g. http://head:8265)")
        if self.launcher == "torchrun" and self.nproc_per_node is None and self.device == "cpu":
            raise ValueError(
                "launcher 'torchrun' on device 'cpu' needs training.nproc_per_node "
                "(there are no GPUs to count)"
            )
        return self


class TriggerSettings(_Section):
    lora_threshold: int = Field(
        50, ge=1, description="Eligible samples since the last training that queue a LoRA job."
    )
    lora_min_samples: int = Field(
        10, ge=1, description="A LoRA job with fewer training samples is skipped."
    )
    full_min_samples: int = Field(
        300, ge=1, description="A full fine-tune needs this many eligible samples (else skipped)."
    )
    lora_schedule: str | None = Field(
        "0 3 * * *",
        description="Cron line for the daily LoRA of profiles with new samples; unset: none.",
    )
    full_schedule: str | None = Field(
        "0 4 * * 0",
        description="Cron line for the weekly full fine-tune of profiles whose corpus meets "
        "full_min_samples; unset: none.",
    )
    timezone: str | None = Field(None, description="Time zone of the schedules; unset: local.")
    misfire_grace_s: float = Field(
        6 * 3600.0,
        ge=0,
        description="A schedule missed while the daemon was down runs once at start-up if "
        "its time was at most this long ago.",
    )
    replay_fraction: float = Field(
        0.25, ge=0, le=10, description="Older samples replayed in a LoRA, per new sample."
    )
    replay_max: int = Field(500, ge=0, description="Most older samples replayed in a LoRA.")
    replay_min_quality: float = Field(
        8.0, ge=0, le=10, description="Only older samples of at least this quality are replayed."
    )


class AskSettings(_Section):
    warm: bool = Field(
        True,
        description="Keep the model loaded between questions in a generation worker process "
        "(ended when idle and before training); false: a fresh process loads it per answer.",
    )
    idle_timeout_s: float = Field(
        600.0, gt=0, description="A warm generation worker idle this long is ended."
    )
    max_new_tokens: int = Field(96, ge=1, le=4096, description="Longest answer, in tokens.")
    timeout_s: float = Field(
        600.0, gt=0, description="Seconds an answer may take (loading the model included)."
    )


class EvalSettings(_Section):
    judge_model: str | None = Field(
        None,
        description="An Ollama model that also judges persona fidelity (persona match 1-10, "
        "the candidate against its reference with positions swapped), recorded apart and "
        "never part of the verdict; on the server ollama.url (unset: Ollama's default "
        "address). Unset or empty: no judge.",
    )
    judge_timeout_s: float = Field(
        120.0, gt=0, description="Seconds one question to the judge model may take."
    )
