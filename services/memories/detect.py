"""From a file's name and bytes to its memories: pick the format family and parse."""

from __future__ import annotations

from pathlib import PurePath

import structlog

from . import containers, text
from .decode import decode
from .model import Memory, ParseResult, Problem

log = structlog.get_logger(__name__)

SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".ndjson", ".csv", ".txt", ".md", ".markdown")


def _parse_text(name: str, suffix: str, body: str) -> list[Memory | Problem]:
    if suffix == ".json":
        return containers.parse_json_document(body)
    if suffix in (".jsonl", ".ndjson"):
        return containers.parse_json_lines(body)
    if suffix == ".csv":
        return containers.parse_csv(body)
    if suffix == ".txt" and text.is_qa(body):
        return text.parse_qa(body)
    return text.parse_prose(body, name)


def _parse(name: str, data: bytes) -> ParseResult:
    suffix = PurePath(name).suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        shown = f"'{suffix}'" if suffix else "(none)"
        return ParseResult(
            problems=[
                Problem(
                    f"unsupported file type {shown}; memory files must end in "
                    f"{', '.join(SUPPORTED_EXTENSIONS)}"
                )
            ]
        )
    if not data:
        return ParseResult(problems=[Problem("the file is empty (0 bytes); nothing to read")])
    body = decode(data)
    if isinstance(body, Problem):
        return ParseResult(problems=[body])
    if not body.strip():
        return ParseResult(problems=[Problem("the file is empty (only whitespace)")])
    result = ParseResult()
    for item in _parse_text(name, suffix, body):
        if isinstance(item, Memory):
            result.memories.append(item)
        else:
            result.problems.append(item)
    if not result.memories and not result.problems:
        result.problems.append(Problem(f"no records found in this {suffix} file"))
    return result


def parse_bytes(name: str, data: bytes) -> ParseResult:
    """Parse one memory file's bytes; ``name`` (a file name or path) gives the extension
    and, for prose without a heading, the title. Never raises."""
    try:
        return _parse(name, data)
    except Exception as exc:  # the contract is a ParseResult, whatever the bytes
        log.exception("memories.parse_failed", name=name)
        return ParseResult(
            problems=[
                Problem(
                    f"internal error while parsing ({type(exc).__name__}: {exc}); "
                    "this is a bug in personad, please report it"
                )
            ]
        )
