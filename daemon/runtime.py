"""What the control commands see of the running daemon: a small interface that
:class:`daemon.app.Daemon` provides, so that the commands need nothing else of it."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from services.generation_pool import WorkerPool
from services.index import VectorIndex
from services.publish.release import ReleaseConfig
from services.settings import Settings


@dataclass(frozen=True)
class IngestState:
    """The ingest worker at a glance (``state`` is ``stopped`` when there is none)."""

    state: str
    queue: int  # files waiting, all profiles
    files_read: int
    scans: int
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "queue": self.queue,
            "files_read": self.files_read,
            "scans": self.scans,
            "last_error": self.last_error,
        }


class JobControl(Protocol):
    """The job supervisor, as the commands use it."""

    def running(self) -> dict[int, dict[str, Any]]:
        """Live progress of the running jobs, by job id."""
        ...

    def wake(self) -> None:
        """Look at the queue now."""
        ...

    def cancel(self, job_id: int) -> bool:
        """Stop a running job; False when it is not running here."""
        ...

    def release_config(self) -> ReleaseConfig: ...


class Runtime(Protocol):
    """The running daemon, as the control commands see it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def state(self) -> str:
        """starting, running, stopping or stopped."""
        ...

    @property
    def started_monotonic(self) -> float: ...

    @property
    def index(self) -> VectorIndex | None:
        """The vector index; None while it is not available."""
        ...

    @property
    def supervisor(self) -> JobControl | None: ...

    @property
    def generation_pool(self) -> WorkerPool:
        """The warm generation workers that answer ``ask`` (``ask.warm``)."""
        ...

    def queue_depth(self, profile: str | None = None) -> int:
        """Files waiting to be ingested, of one profile or of all."""
        ...

    def ingest_state(self) -> IngestState: ...

    def request_reindex(self, profile: str) -> Future[int] | None:
        """Rebuild a profile's index; None when there is no ingest worker or index."""
        ...

    def describe_schedules(self) -> list[dict[str, Any]]: ...

    def http_info(self) -> dict[str, Any] | None:
        """The HTTP API: ``{"url", "listen", "error"}`` (error: why it is not serving), or
        None when ``http.enabled`` is false."""
        ...

    def http_token(self) -> str:
        """The HTTP API's bearer token."""
        ...

    def retrieve(self, profile: str, question: str, k: int) -> list[tuple[str, str]]:
        """The ``k`` memories ``ask`` would retrieve for ``question``, as (id, text), best
        first; [] while the index is not available."""
        ...
