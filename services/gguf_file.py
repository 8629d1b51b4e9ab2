"""GGUF files: whether a file is one (by its ``.gguf`` name, else by its magic bytes: Ollama's
blobs are GGUF files named ``sha256-<hex>``), and their parsed header, read once per process.

Parsing a header lists every tensor (seconds for a 135M model on a slow CPU); planning,
rendering and token counting all read the same file, so :func:`gguf_reader` keeps the last
few readers, keyed by path, size and modification time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    """A path named ``*.gguf``, or a file starting with ``GGUF``."""
    path = Path(path)
    if path.suffix == ".gguf":
        return True
    try:
        with path.open("rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def gguf_reader(path: Path) -> Any:
    """A ``gguf.GGUFReader`` of ``path`` (memory-mapped; the same object while the file is
    unchanged). Raises what the reader raises (``OSError``, ``ValueError``, ...)."""
    st = Path(path).stat()
    return _reader(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _reader(path: str, size: int, mtime_ns: int) -> Any:
    import gguf  # numpy-only; imported here so that importing this module stays cheap

    return gguf.GGUFReader(path)
