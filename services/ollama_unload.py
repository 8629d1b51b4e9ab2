"""Freeing the GPU before training: ask Ollama to unload every loaded model."""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)


def unload_all(host: str, timeout: float = 30.0) -> list[str]:
    """Unload the models Ollama holds in memory (``keep_alive=0``); returns their names.

    Failures are logged, never raised: training goes on, Ollama may just keep its memory.
    """
    import ollama

    client = ollama.Client(host=host, timeout=timeout)
    unloaded: list[str] = []
    try:
        loaded = [m.model for m in client.ps().models if m.model]
    except Exception as exc:
        log.warning("cannot list Ollama's loaded models", host=host, error=str(exc))
        return unloaded
    for name in loaded:
        try:
            client.generate(model=name, prompt="", keep_alive=0)
            unloaded.append(name)
        except Exception as exc:
            log.warning("cannot unload an Ollama model", model=name, error=str(exc))
    if unloaded:
        log.info("unloaded Ollama models before training", models=unloaded)
    return unloaded
