"""Weights files fetched so that a download stopped midway continues where it stopped,
in this process or the next one.

huggingface_hub (2.4) resumes a connection lost within one call, but writes each file to
a temporary name of its own process and removes it when the process stops: a daemon
restarted in the middle of a 15 GB file would start that file again. The LFS files served
over plain HTTP (the weights) are therefore fetched here first, into the cache's
``blobs/<sha256>`` through ``blobs/<sha256>.partial``, which a later attempt continues
with a ``Range`` request; the sha256 is checked before the blob takes its name.
``snapshot_download`` then links what is already there. Files the hub stores with Xet
are left to huggingface_hub's Xet client, whose chunk cache a new process reuses.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PARTIAL = ".partial"
RETRIES = 5  # connections lost in a row before giving up
TIMEOUT_S = 60.0
CHUNK = 1 << 20


@dataclass(frozen=True)
class LfsFile:
    size: int
    sha256: str


class BlobMismatch(OSError):
    """A downloaded file whose size or sha256 is not the hub's."""


def fetch_blobs(
    repo_id: str, commit: str, files: Mapping[str, LfsFile], folder: Path, endpoint: str
) -> None:
    """Each of ``files`` into ``<folder>/blobs/<sha256>`` unless it is there already."""
    from huggingface_hub import hf_hub_url

    for name, lfs in files.items():
        blob = folder / "blobs" / lfs.sha256
        if not blob.is_file():
            url = hf_hub_url(repo_id, name, revision=commit, endpoint=endpoint)
            fetch_blob(url, blob, lfs)


def fetch_blob(url: str, blob: Path, lfs: LfsFile) -> None:
    """``url`` into ``blob``, continuing ``blob.partial`` when a former attempt left one."""
    import httpx2

    partial = blob.with_name(blob.name + PARTIAL)
    blob.parent.mkdir(parents=True, exist_ok=True)
    lost = 0
    while True:
        start = partial.stat().st_size if partial.is_file() else 0
        if start > lfs.size:
            partial.unlink()
            start = 0
        if start == lfs.size:
            break
        try:
            _get(url, partial, start)
            lost = 0
        except httpx2.TransportError:
            lost += 1
            if lost > RETRIES:
                raise
            time.sleep(1.0)
    _check(partial, lfs)
    os.replace(partial, blob)


def _get(url: str, partial: Path, start: int) -> None:
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    headers = {**build_hf_headers(), "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    with get_session().stream(
        "GET", url, headers=headers, follow_redirects=True, timeout=TIMEOUT_S
    ) as response:
        if response.status_code >= 400:
            response.read()
            hf_raise_for_status(response)
        resumed = start and response.status_code == 206
        with open(partial, "ab" if resumed else "wb") as f:
            for chunk in response.iter_bytes(CHUNK):
                f.write(chunk)
                f.flush()  # what arrived survives the process


def _check(path: Path, lfs: LfsFile) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != lfs.sha256:
        path.unlink()
        raise BlobMismatch(
            f"{path.name}: the downloaded file's sha256 is not the hub's; it was removed, "
            "the next attempt downloads it again"
        )
