"""A Hugging Face hub model fetched into the state directory, run as a child process:
``python -m services.training.hub_download --repo ORG/NAME --cache-dir DIR [--progress-fd N]``.

The daemon starts it before a job whose base is a hub id that is not cached yet (it never
downloads in its own process). Only what training needs is fetched (:data:`ALLOW`):
``config.json``, ``generation_config.json``, the safetensors weights and their index, the
tokenizer files; never ``.bin``/``.pth``/``.gguf``/ONNX copies nor subfolders. Files go into
a Hugging Face cache under ``<cache-dir>/hub`` (:func:`hub_cache`; ``cache-dir`` is
``<state>/base-models``), where :func:`cached_snapshot` finds them, as it finds the user's
own Hugging Face cache.

Progress: ``{"event": "download", "repo", "done_bytes", "total_bytes"}`` about once a second
on the progress fd (``services.training.progress``), then ``done`` with the snapshot's path
as ``artifact``, or ``error`` (exit 3 for a missing or gated repo, ``HF_HUB_OFFLINE``, a
repo without safetensors; exit 1 for a hub that cannot be reached).

A download stopped in the middle of a weights file, by a lost connection or with its
process, continues from the bytes already received (``Range``;
:mod:`services.training.hub_resume`); files completed before are kept. huggingface_hub reads
``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` when it is imported: this process
inherits them from the daemon's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.durable import write_text
from services.training.errors import BadInputError
from services.training.hub_resume import LfsFile, fetch_blobs
from services.training.progress import ProgressWriter

ALLOW = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "chat_template*",
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
IGNORE = ["*/*"]  # subfolders: original/*.pth, onnx/, ... never needed
TRUE = ("1", "true", "yes", "on")

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class HubUnreachable(Exception):
    """The hub could not be reached (network down, a wrong ``HF_ENDPOINT``)."""


def hub_cache(cache_dir: Path) -> Path:
    """The Hugging Face cache personad downloads into: ``<cache_dir>/hub``."""
    return Path(cache_dir) / "hub"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline() -> str | None:
    """The variable that makes huggingface_hub offline (``HF_HUB_OFFLINE``, or the
    ``TRANSFORMERS_OFFLINE`` it also honours), None when online."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in TRUE:
            return name
    return None


def cached_snapshot(repo_id: str, cache_dir: Path | None) -> Path | None:
    """The complete local snapshot of ``repo_id``: in ``<cache_dir>/hub`` first, then in
    the user's Hugging Face cache; None when neither has it. Nothing is requested."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    caches: list[Path | None] = [None]
    if cache_dir is not None:
        caches.insert(0, hub_cache(cache_dir))
    for cache in caches:
        try:
            found = snapshot_download(
                repo_id,
                cache_dir=cache,
                local_files_only=True,
                allow_patterns=ALLOW,
                ignore_patterns=IGNORE,
            )
        except (LocalEntryNotFoundError, OSError, ValueError):
            continue
        if complete(Path(found)):
            return Path(found)
    return None


def complete(snapshot: Path) -> bool:
    """Whether a snapshot holds what training needs: ``config.json``, the safetensors
    weights (every shard its index names) and a tokenizer. A snapshot can hold less:
    planning fetches ``config.json`` alone, and without a cached tree listing
    huggingface_hub returns whatever snapshot folder there is."""
    if not (snapshot / "config.json").is_file():
        return False
    if not any((snapshot / name).is_file() for name in TOKENIZER_FILES):
        return False
    index = snapshot / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return False
        return all((snapshot / shard).is_file() for shard in shards)
    return any(snapshot.glob("*.safetensors"))


def _explain(exc: BaseException, repo_id: str) -> Exception:
    """A hub failure as an error a person can act on (no traceback)."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = endpoint()
    if isinstance(exc, GatedRepoError):
        return BadInputError(
            f"{repo_id} is gated on {url}: accept its terms on {url}/{repo_id} and log in "
            "(hf auth login, or set HF_TOKEN) where the daemon runs"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return BadInputError(
            f"{repo_id} was not found on {url} (a typo, or a private repo: log in with "
            "hf auth login or set HF_TOKEN)"
        )
    if isinstance(exc, RevisionNotFoundError):
        return BadInputError(f"{repo_id} has no such revision on {url}")
    if isinstance(exc, httpx2.TransportError):
        reason = str(exc) or type(exc).__name__
        return HubUnreachable(
            f"cannot reach the Hugging Face hub at {url} to download {repo_id} ({reason}); "
            "check the network (or HF_ENDPOINT), or download it elsewhere with hf download "
            f"{repo_id} and copy the cache"
        )
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return HubUnreachable(f"the hub at {url} refused {repo_id} (HTTP {status}): {exc}")
    return HubUnreachable(f"downloading {repo_id} from {url} failed: {exc}")


@dataclass(frozen=True)
class Remote:
    """What :func:`download` fetches: the commit, every file's size, and the weights
    fetched resumably (:mod:`services.training.hub_resume`)."""

    commit: str
    sizes: dict[str, int]
    resumable: dict[str, LfsFile]


def remote_files(repo_id: str) -> Remote:
    """The repo's files to fetch, from its info and tree; the clear errors above."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects
    from huggingface_hub.utils._runtime import is_xet_available

    if variable := offline():
        raise BadInputError(
            f"{repo_id} is not in the local cache and {variable} is set; download it "
            f"with hf download {repo_id} (on a machine online), or unset {variable}"
        )
    api = HfApi(endpoint=endpoint())
    try:
        info = api.repo_info(repo_id)
        tree = [
            f
            for f in api.list_repo_tree(repo_id, recursive=True, revision=info.sha)
            if isinstance(f, RepoFile)
        ]
    except (HfHubHTTPError, httpx2.TransportError, OfflineModeIsEnabled) as exc:
        raise _explain(exc, repo_id) from exc
    sizes = {f.path: int(f.size or 0) for f in tree}
    wanted = set(filter_repo_objects(sizes, allow_patterns=ALLOW, ignore_patterns=IGNORE))
    if not any(name.endswith(".safetensors") for name in wanted):
        raise BadInputError(
            f"{repo_id} has no safetensors weights on {endpoint()} (personad trains only "
            "from safetensors)"
        )
    if "config.json" not in wanted:
        raise BadInputError(f"{repo_id} has no config.json: not a transformers model")
    xet = is_xet_available()
    resumable = {
        f.path: LfsFile(int(f.lfs.size), str(f.lfs.sha256))
        for f in tree
        if f.path in wanted and f.lfs is not None and not (xet and f.xet_hash)
    }
    return Remote(str(info.sha), {name: sizes[name] for name in sorted(wanted)}, resumable)


def _on_disk(folder: Path) -> int:
    """Bytes under a repo's cache folder's blobs, the partial downloads included."""
    total = 0
    for path in (folder / "blobs").glob("*"):
        try:
            total += path.stat().st_size
        except OSError:  # renamed or removed meanwhile
            continue
    return total


def download(repo_id: str, cache_dir: Path, on_progress: Progress | None = None) -> Path:
    """The snapshot of ``repo_id`` in ``<cache_dir>/hub``, fetched when it is not cached;
    ``on_progress(done, total)`` about once a second while it downloads."""
    found = cached_snapshot(repo_id, cache_dir)
    if found is not None:
        return found
    import httpx2
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    remote = remote_files(repo_id)
    commit, files = remote.commit, remote.sizes
    total = sum(files.values())
    cache = hub_cache(cache_dir)
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    stop = threading.Event()

    def report() -> None:
        while on_progress is not None:
            on_progress(min(_on_disk(folder), total), total)
            if stop.wait(1.0):
                return

    watcher = threading.Thread(target=report, name="download-progress", daemon=True)
    watcher.start()
    try:
        fetch_blobs(repo_id, commit, remote.resumable, folder, endpoint())
        path = snapshot_download(
            repo_id,
            revision=commit,
            cache_dir=cache,
            endpoint=endpoint(),
            allow_patterns=list(files),
            ignore_patterns=IGNORE,
        )
    except (HfHubHTTPError, httpx2.TransportError, OSError) as exc:
        raise _explain(exc, repo_id) from exc
    finally:
        stop.set()
        watcher.join()
    # Fetched by its commit: the ``main`` ref later look-ups resolve is written here.
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    write_text(folder / "refs" / "main", commit)
    if on_progress is not None:
        on_progress(total, total)
    return Path(path)


def fetch_missing(repo_id: str, cache_dir: Path, progress: ProgressWriter) -> None:
    """Download ``repo_id`` when no cache has it, reporting ``download`` events."""
    if cached_snapshot(repo_id, cache_dir) is not None:
        return

    def emit(done: int, total: int) -> None:
        progress.emit("download", repo=repo_id, done_bytes=done, total_bytes=total)

    download(repo_id, cache_dir, emit)


def main(argv: list[str] | None = None) -> int:
    from services.training.command import ExitCode

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # progress goes to the fd
    p = argparse.ArgumentParser(prog="python -m services.training.hub_download")
    p.add_argument("--repo", required=True)
    p.add_argument("--cache-dir", required=True, type=Path)
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--progress-fd", type=int)
    args = p.parse_args(argv)
    progress = ProgressWriter(args.run_dir / "download.jsonl", args.progress_fd)

    code: int = ExitCode.OK
    try:
        fetch_missing(args.repo, args.cache_dir, progress)
        path = download(args.repo, args.cache_dir)
        progress.emit("done", metrics={}, artifact=str(path))
    except BadInputError as exc:
        code, message = ExitCode.BAD_INPUT, str(exc)
    except HubUnreachable as exc:
        code, message = ExitCode.ERROR, str(exc)
    except KeyboardInterrupt:
        code, message = ExitCode.CANCELLED, "cancelled"
    if code != ExitCode.OK:
        print(f"personad: {message}", file=sys.stderr)
        progress.emit("error", message=message, code=int(code))
    progress.close()
    return int(code)


def _term(*_: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, _term)
    sys.exit(main())
