"""Publishing trained models: a local registry with an atomic ``active`` switch, and
Ollama (``<prefix>-<profile>:v<N>`` plus a verified ``:latest`` alias).

``LocalRegistry`` needs no server; ``OllamaPublisher`` talks to ``ollama serve``.
``plan_retention`` decides which old versions either of them deletes.
"""

from services.publish.errors import PublishError
from services.publish.local import LocalRegistry
from services.publish.modelfile import render_modelfile, served_parameters, served_system
from services.publish.names import model_base, normalise_part
from services.publish.ollama import ADAPTER_ARCHITECTURES, OllamaPublisher, Published
from services.publish.ollama_server import MIN_VERSION
from services.publish.retention import DEFAULT_KEEP, plan_retention, previous_version

__all__ = [
    "ADAPTER_ARCHITECTURES",
    "DEFAULT_KEEP",
    "MIN_VERSION",
    "LocalRegistry",
    "OllamaPublisher",
    "PublishError",
    "Published",
    "model_base",
    "normalise_part",
    "plan_retention",
    "previous_version",
    "render_modelfile",
    "served_parameters",
    "served_system",
]
