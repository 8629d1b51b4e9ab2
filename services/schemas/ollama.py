"""What Ollama renders for a conversation, for the Go templates the schemas ship.

``render_ollama`` executes the subset of Go's text/template that message-based Ollama
templates like ``chatml``, ``llama3-instruct`` and ``phi-3`` use, with Ollama's own
handling of the conversation around it:

- a Modelfile ``SYSTEM`` is put first as a system message when the request's first
  message is not a system message (server/routes.go, ChatHandler);
- consecutive messages of the same role, tool messages apart, are merged with a blank
  line between them (template/template.go, ``collate``).

Supported actions: text, ``{{ .Field }}`` and ``{{ $.Field }}``, ``range`` over a list,
``if`` / ``else if`` / ``else`` / ``end``, the functions ``eq``, ``ne``, ``and``,
``or``, ``not``, string literals, comments, and the ``{{-`` / ``-}}`` trim markers.
Anything else is a SchemaError: this is a check that training and serving agree, not
a general Go template engine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.schemas.errors import SchemaError

_FIELD_NAMES = {"role": "Role", "content": "Content"}


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    expr: list[Any]


@dataclass
class _Range:
    expr: list[Any]
    body: list[Any] = field(default_factory=list)


@dataclass
class _If:
    branches: list[tuple[list[Any], list[Any]]] = field(default_factory=list)
    orelse: list[Any] | None = None


def _lex(source: str) -> list[tuple[str, str]]:
    """Split into ("text", s) and ("action", s) items, applying the trim markers."""
    items: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            if text:
                items.append(("text", text))
            return items
        end = source.find("}}", start + 2)
        if end < 0:
            raise SchemaError(f"unclosed action at offset {start}")
        inner = source[start + 2 : end]
        if inner.startswith("-") and inner[1:2] in (" ", "\t", "\r", "\n"):
            text = text.rstrip(" \t\r\n")
            inner = inner[1:]
        trim_next = False
        if inner.endswith("-") and inner[-2:-1] in (" ", "\t", "\r", "\n"):
            trim_next = True
            inner = inner[:-1]
        if text:
            items.append(("text", text))
        items.append(("action", inner.strip()))
        pos = end + 2


_TOKEN = re.compile(
    r'\s*(?:(?P<open>\()|(?P<close>\))|(?P<str>"(?:[^"\\]|\\.)*")|(?P<word>[^\s()]+))'
)


def _words(action: str) -> list[Any]:
    """The words of an action; a parenthesized pipeline becomes a nested list."""
    stack: list[list[Any]] = [[]]
    pos = 0
    while pos < len(action):
        match = _TOKEN.match(action, pos)
        if match is None:
            if action[pos:].strip():
                raise SchemaError(f"cannot parse {{{{ {action} }}}}")
            break
        pos = match.end()
        if match["open"]:
            stack.append([])
        elif match["close"]:
            if len(stack) == 1:
                raise SchemaError(f"unbalanced ) in {{{{ {action} }}}}")
            inner = stack.pop()
            stack[-1].append(inner)
        else:
            stack[-1].append(match["str"] or match["word"])
    if len(stack) != 1:
        raise SchemaError(f"unbalanced ( in {{{{ {action} }}}}")
    return stack[0]


def parse(source: str) -> list[Any]:
    """Parse an Ollama Go template into a small tree (SchemaError if unsupported)."""
    root: list[Any] = []
    stack: list[tuple[Any, list[Any]]] = []  # (open node, list being filled)
    body = root
    for kind, value in _lex(source):
        if kind == "text":
            body.append(_Text(value))
            continue
        if value.startswith("/*") and value.endswith("*/"):
            continue
        words = _words(value)
        head = words[0] if words else ""
        if head == "range":
            node = _Range(words[1:])
            body.append(node)
            stack.append((node, body))
            body = node.body
        elif head == "if":
            if_node = _If([(words[1:], [])])
            body.append(if_node)
            stack.append((if_node, body))
            body = if_node.branches[0][1]
        elif head == "else":
            if not stack or not isinstance(stack[-1][0], _If) or stack[-1][0].orelse is not None:
                raise SchemaError(f"unexpected {{{{ {value} }}}}")
            open_if = stack[-1][0]
            if words[1:2] == ["if"]:
                open_if.branches.append((words[2:], []))
                body = open_if.branches[-1][1]
            else:
                open_if.orelse = []
                body = open_if.orelse
        elif head == "end":
            if not stack:
                raise SchemaError("unexpected {{ end }}")
            _, body = stack.pop()
        elif isinstance(head, list) or head[:1] in ('"', ".") or head.startswith("$."):
            body.append(_Action(words))
        else:
            raise SchemaError(f"unsupported Go template action {{{{ {value} }}}}")
    if stack:
        raise SchemaError("missing {{ end }}")
    return root


def _lookup(name: str, dot: Any, root: Mapping[str, Any]) -> Any:
    scope: Any
    if name.startswith("$."):
        scope, path = root, name[2:]
    elif name.startswith("."):
        scope, path = dot, name[1:]
    else:
        raise SchemaError(f"unsupported operand {name!r}")
    for part in path.split(".") if path else []:
        if not isinstance(scope, Mapping):
            return None
        scope = scope.get(part)
    return scope


def _evaluate(words: list[Any], dot: Any, root: Mapping[str, Any]) -> Any:
    if not words:
        raise SchemaError("empty pipeline")
    head, args = words[0], words[1:]

    def operand(word: str | list[Any]) -> Any:
        if isinstance(word, list):
            return _evaluate(word, dot, root)
        if word.startswith('"') and word.endswith('"') and len(word) >= 2:
            return json.loads(word)
        return _lookup(word, dot, root)

    if head in ("eq", "ne"):
        if len(args) < 2:
            raise SchemaError(f"{head} needs two operands")
        first = operand(args[0])
        hit = any(first == operand(a) for a in args[1:])
        return hit if head == "eq" else not hit
    if head == "not":
        return not bool(_evaluate(args, dot, root))
    if head in ("and", "or"):
        if not args:
            raise SchemaError(f"{head} needs operands")
        values = [operand(a) for a in args]
        result = values[0]
        for value in values[1:]:
            if (head == "and") != bool(result):
                break
            result = value
        return result
    if args or not (isinstance(head, list) or head[:1] in ('"', ".", "$")):
        raise SchemaError(f"unsupported pipeline {words!r}")
    return operand(head)


def _execute(nodes: Sequence[Any], dot: Any, root: Mapping[str, Any], out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Action):
            value = _evaluate(node.expr, dot, root)
            out.append("" if value is None else str(value))
        elif isinstance(node, _Range):
            for item in _evaluate(node.expr, dot, root) or ():
                _execute(node.body, item, root, out)
        elif isinstance(node, _If):
            for condition, body in node.branches:
                if bool(_evaluate(condition, dot, root)):
                    _execute(body, dot, root, out)
                    break
            else:
                if node.orelse is not None:
                    _execute(node.orelse, dot, root, out)


def collate(
    messages: Sequence[Mapping[str, Any]], system: str | None = None
) -> list[dict[str, str]]:
    """The messages an Ollama chat template sees for a /api/chat request."""
    msgs = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in messages]
    if system and msgs and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system})
    collated: list[dict[str, str]] = []
    for m in msgs:
        if collated and collated[-1]["role"] == m["role"] and m["role"] != "tool":
            collated[-1]["content"] += "\n\n" + m["content"]
        else:
            collated.append(dict(m))
    return collated


def render_ollama(
    template: str, messages: Sequence[Mapping[str, Any]], system: str | None = None
) -> str:
    """The prompt Ollama builds from ``template`` for a chat request of ``messages``.

    ``system`` is the Modelfile's SYSTEM, used when the conversation has no system
    message of its own. The result ends with the template's generation prompt.
    """
    collated = collate(messages, system)
    root = {
        "Messages": [{_FIELD_NAMES[k]: v for k, v in m.items()} for m in collated],
        "System": "\n\n".join(m["content"] for m in collated if m["role"] == "system"),
        "Tools": None,
        "Response": "",
        "Think": False,
        "IsThinkSet": False,
    }
    out: list[str] = []
    _execute(parse(template), root, root, out)
    return "".join(out)
