"""Memory files: detect their format, parse them into ``Memory`` records.

Public entry points:

- :func:`parse_bytes` ``(name, data) -> ParseResult``: one file's bytes, format by the
  name's extension and the records' fields (docs/ARCHITECTURE.md, "Memory formats").
- :func:`read_memory_file` ``(path, max_bytes) -> (ParseResult, sha256 | None)``: the
  same, straight from disk, read-only, for files that may be huge, vanish or loop.

Neither raises: what cannot be taken is a :class:`Problem`, for one record (its locator
says where) or for the whole file (empty locator), and good records of a file are kept
whatever happens to the bad ones.
"""

from __future__ import annotations

from .detect import SUPPORTED_EXTENSIONS, parse_bytes
from .errors import MemoriesError
from .model import FORMATS, Memory, ParseResult, Problem, canonical_json, content_id
from .reader import DEFAULT_MAX_BYTES, read_memory_file
from .text import estimate_tokens

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "SUPPORTED_EXTENSIONS",
    "MemoriesError",
    "Memory",
    "ParseResult",
    "Problem",
    "canonical_json",
    "content_id",
    "estimate_tokens",
    "parse_bytes",
    "read_memory_file",
]
