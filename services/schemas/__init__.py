"""Chat schemas: a model family's exact training text, and what Ollama serves.

``Renderer`` renders a conversation byte for byte as transformers'
``apply_chat_template`` would (jinja2 only; transformers is never imported here),
splits a sample into prompt and completion, and formats prose continuations.
``etc/schemas/<family>.json`` holds each family's fallback template, special tokens,
Ollama TEMPLATE, stop tokens and parameters, and notes on where training and serving
differ.
"""

from services.schemas.detect import detect_family
from services.schemas.errors import SchemaError
from services.schemas.ollama import render_ollama
from services.schemas.renderer import Renderer
from services.schemas.schema import FAMILIES, ChatSchema, load_schema

__all__ = [
    "FAMILIES",
    "ChatSchema",
    "Renderer",
    "SchemaError",
    "detect_family",
    "load_schema",
    "render_ollama",
]
