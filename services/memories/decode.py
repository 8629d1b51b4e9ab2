"""Bytes to text: encodings, BOMs, binary content, line endings."""

from __future__ import annotations

import codecs

from .fields import normalise_text
from .model import Problem

_RESAVE = "re-save the file as UTF-8"
# Longest first: the UTF-32 LE BOM begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)


def _line_col(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def decode(data: bytes) -> str | Problem:
    """The file's text with any BOM stripped and CRLF turned into LF, or why not.

    UTF-8 is expected (a BOM is allowed); UTF-16 and UTF-32 are read when they start with
    their BOM. NUL bytes in anything else mean binary content.
    """
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom) :].decode(codec)
            except UnicodeDecodeError as exc:
                offset = exc.start + len(bom)
                return Problem(
                    f"not valid {label} text: bytes at offset {offset} cannot be decoded "
                    f"({exc.reason}); {_RESAVE}"
                )
            if "\x00" in text:
                return Problem(
                    "binary content: the text holds NUL characters; memory files must be text"
                )
            return normalise_text(text)
    nul = data.find(b"\x00")
    if nul >= 0:
        return Problem(
            f"binary content (a NUL byte at offset {nul}); memory files must be text. If this "
            f"is UTF-16 text without a byte order mark, {_RESAVE}"
        )
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + start
        return Problem(
            f"not valid UTF-8: byte 0x{data[offset]:02x} at offset {offset} "
            f"({_line_col(data, offset)}) cannot be decoded; {_RESAVE} "
            "(it may be Latin-1 or Windows-1252)"
        )
    return normalise_text(text)
