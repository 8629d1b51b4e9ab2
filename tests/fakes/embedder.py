"""Embedders for tests: a fast hash-based one, and the real local model loaded once."""

from __future__ import annotations

import functools
import threading

from services.embedding import LocalEmbedder
from tests.fakes.ollama_server import hash_embedding


class HashEmbedder:
    """Satisfies ``services.embedding.Embedder``: unit vectors derived from text hashes
    (equal texts, equal vectors; different texts, nearly orthogonal ones). Counts what
    it embeds, for tests that check work is not repeated."""

    def __init__(self, dim: int = 16, name: str = "test:hash") -> None:
        self.dim = dim
        self.name = name
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    @property
    def embedded(self) -> int:
        """How many texts were embedded so far."""
        return sum(len(c) for c in self.calls)

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self.calls.append(list(texts))
        return [hash_embedding(t, self.dim) for t in texts]


@functools.cache
def shared_local_embedder() -> LocalEmbedder:
    """One loaded all-MiniLM-L6-v2 per test process (loading takes seconds)."""
    embedder = LocalEmbedder()
    embedder.embed(["warm up"])
    return embedder
