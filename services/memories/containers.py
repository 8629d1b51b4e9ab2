"""Containers: a JSON document, JSON lines and CSV, each a sequence of records.

Locators: ``item N`` in a JSON array, ``line N`` in JSON lines, ``row N`` in CSV (data rows,
counted from 1 after the header), all 1-based; a JSON file holding one object has the empty
locator (its one record is the whole file). A chat turn adds ``message N``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import Counter
from typing import Any

from . import chat, metahuman, records
from .errors import RecordError
from .fields import describe, kind_of
from .model import Memory, Problem

Items = list[Memory | Problem]

_SHAPES = (
    "a MetaHuman event (content with id, timestamp or type), prompt+completion, "
    "prompt+response, instruction+input+output, or messages"
)


def _problem(locator: str, message: str) -> Problem:
    return Problem(f"{locator}: {message}" if locator else message, locator)


def _unknown_shape(obj: dict[str, Any]) -> str:
    if not obj:
        return f"empty object; expected {_SHAPES}"
    names = sorted(obj)
    listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    if "content" in obj:
        hint = "it has content but none of id, timestamp, type (a MetaHuman event needs one)"
    elif "prompt" in obj:
        hint = "it has prompt but no completion or response"
    elif "instruction" in obj:
        hint = "it has instruction but no output"
    elif "completion" in obj or "response" in obj:
        hint = "it has no prompt"
    else:
        hint = f"expected {_SHAPES}"
    return f"unknown record shape (fields: {listed}); {hint}"


def parse_object(obj: Any, locator: str) -> Items:
    """The memories (or the problem) of one JSON value that should be a record."""
    if not isinstance(obj, dict):
        return [_problem(locator, f"expected a JSON object, got {describe(obj)}")]
    try:
        if metahuman.is_event(obj):
            return [metahuman.parse_event(obj, locator)]
        if "messages" in obj:
            return chat.parse_chat(obj, locator)
        format = records.record_format(obj)
        if format is None:
            raise RecordError(_unknown_shape(obj))
        return [records.parse_record(obj, format, locator)]
    except RecordError as exc:
        return [_problem(locator, str(exc))]
    except RecursionError:
        return [_problem(locator, "the record is nested too deeply to process")]


def parse_json_document(text: str) -> Items:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _first_line_is_object(text):
            return parse_json_lines(text)
        return [
            Problem(
                f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}); fix the "
                "file (a .json file holds one object or an array of objects)"
            )
        ]
    except (ValueError, RecursionError) as exc:
        return [Problem(f"cannot read the JSON document ({_reason(exc)}); fix the file")]
    if isinstance(value, dict):
        return parse_object(value, "")
    if isinstance(value, list):
        if not value:
            return [Problem("no records found: the JSON array is empty")]
        out: Items = []
        for number, item in enumerate(value, 1):
            out.extend(parse_object(item, f"item {number}"))
        return out
    return [
        Problem(f"the JSON document is {kind_of(value)}; expected an object or an array of objects")
    ]


def _first_line_is_object(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0]
    try:
        return isinstance(json.loads(first), dict)
    except (ValueError, RecursionError):
        return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def parse_json_lines(text: str) -> Items:
    lines = text.split("\n")
    if sum(1 for line in lines if line.strip()) > 1:
        # One pretty-printed JSON document in a .jsonl file is read as such (JSON lines
        # proper fail here quickly, with "Extra data" after their first line).
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            return parse_json_document(text)
    out: Items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        locator = f"line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append(
                _problem(
                    locator,
                    f"invalid JSON ({exc.msg}, column {exc.colno}); fix or remove the line",
                )
            )
        except (ValueError, RecursionError) as exc:
            out.append(
                _problem(locator, f"cannot read the JSON ({_reason(exc)}); fix or remove the line")
            )
        else:
            out.extend(parse_object(value, locator))
    return out


# ---- CSV ------------------------------------------------------------------------------

_CSV_FORMATS = (
    ("prompt_response", ("prompt", "response")),
    ("prompt_completion", ("prompt", "completion")),
    ("alpaca", ("instruction", "output")),
)
_CSV_HEADERS = "prompt,response (or prompt,completion, or instruction,input,output)"


def _csv_format(columns: list[str]) -> str | None:
    for format, needed in _CSV_FORMATS:
        if all(c in columns for c in needed):
            return format
    return None


_CSV_OPTIONAL = ("quality_score", "timestamp", "metadata")


def _csv_record(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as a record: empty optional cells are absent, numbers and metadata JSON
    parsed; the text cells are kept as they are, empty or not."""
    record: dict[str, Any] = {k: v for k, v in row.items() if k not in _CSV_OPTIONAL or v.strip()}
    for key in ("quality_score", "timestamp"):
        if key in record:
            # Else a timestamp string, or a bad score that the record check reports.
            with contextlib.suppress(ValueError):
                record[key] = float(record[key])
    if "metadata" in record:
        try:
            record["metadata"] = json.loads(record["metadata"])
        except (ValueError, RecursionError):
            raise RecordError(
                "the metadata cell is not a JSON object; fix it or leave it empty"
            ) from None
    return record


def parse_csv(text: str) -> Items:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
    except csv.Error as exc:
        return [Problem(f"cannot read the CSV header ({exc}); fix the first line")]
    if header is None:
        return [Problem("no records found: the CSV file has no header")]
    columns = [c.strip().lower() for c in header]
    format = _csv_format(columns)
    if format is None:
        return [
            Problem(
                f"the CSV header must name the columns {_CSV_HEADERS}; found: {', '.join(header)}"
            )
        ]
    duplicates = sorted(c for c, n in Counter(columns).items() if c and n > 1)
    if duplicates:
        return [Problem(f"the CSV header names {', '.join(duplicates)} more than once; fix it")]
    out: Items = []
    rows = 0
    while True:
        start = reader.line_num + 1
        locator = f"row {rows + 1}"
        where = f"{locator} (line {start})"
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows += 1
            out.append(Problem(f"{where}: {exc}; check the quoting", locator))
            if reader.line_num < start:
                break
            continue
        if not any(cell.strip() for cell in row):
            continue
        rows += 1
        if len(row) != len(columns):
            fix = (
                "fill in the missing values"
                if len(row) < len(columns)
                else "quote values that contain commas"
            )
            out.append(
                Problem(
                    f"{where}: {len(row)} values, but the header names {len(columns)} "
                    f"columns ({', '.join(columns)}); {fix}",
                    locator,
                )
            )
            continue
        record = dict(zip(columns, row, strict=True))
        try:
            out.append(records.parse_record(_csv_record(record), format, locator))
        except RecordError as exc:
            out.append(Problem(f"{where}: {exc}", locator))
    if rows == 0:
        return [Problem("no records found: the CSV file has a header but no rows")]
    return out
