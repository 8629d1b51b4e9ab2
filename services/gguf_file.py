"""Whether a file is a GGUF model: by its ``.gguf`` name, else by its magic bytes (Ollama's
blobs are GGUF files named ``sha256-<hex>``)."""

from __future__ import annotations

from pathlib import Path

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
