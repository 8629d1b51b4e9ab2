"""A jinja2 environment that renders chat templates exactly as transformers does.

This mirrors ``transformers.utils.chat_template_utils._cached_compile_jinja_template``
and ``render_jinja_template`` (transformers 5.x): an ``ImmutableSandboxedEnvironment``
with ``trim_blocks``, ``lstrip_blocks``, the ``loopcontrols`` extension, a
``{% generation %}`` tag, the ``raise_exception`` / ``strftime_now`` / ``dict`` /
``namespace`` globals and a ``tojson`` filter that does not escape HTML. It must not
import transformers: the daemon process stays light.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Names a message's reasoning is passed under (transformers' _REASONING_FIELDS); the
# first is the one chat templates read.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` renders its body unchanged.

    transformers uses the tag to track assistant spans for
    ``return_assistant_tokens_mask``; the rendered text is the body, which is all a
    renderer needs. Without the tag such templates would not even parse.
    """

    tags = {"generation"}  # noqa: RUF012 - jinja2's own class attribute

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        block = jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body)
        block.set_lineno(lineno)
        return block

    def _body(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # jinja2's own tojson escapes HTML characters; transformers' does not.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    # A callable stand-in for dict(): templates cannot reach the type itself.
    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    # Namespaces refuse underscore-prefixed attributes (CPython internals).
    def __init__(*args: Any, **kwargs: Any) -> None:
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                "Chat templates cannot store underscore-prefixed attributes on a namespace, "
                f"but got {name!r}."
            )


def _make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


_ENV = _make_environment()


@lru_cache(maxsize=64)
def compile_template(source: str) -> jinja2.Template:
    """Compile a chat template (cached); raises jinja2's TemplateSyntaxError."""
    return _ENV.from_string(source)


def plain_data(value: Any) -> Any:
    """What transformers' ``_plain_template_data`` makes of the template inputs.

    Rebuilds JSON-like data out of exact built-in types; anything else becomes an
    inert ``<TypeName>`` placeholder.
    """
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain_data(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_data(v) for v in value)
    return f"<{type(value).__name__}>"


def prepare_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """The conversation as transformers hands it to the template.

    Keys whose value is None are dropped, values are rebuilt as plain data, and a
    reasoning given under any of its names is copied to ``reasoning_content`` and
    ``thinking``.
    """
    prepared: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise TypeError(f"chat messages must be dicts, got {message!r}")
        plain = plain_data({k: v for k, v in message.items() if v is not None})
        reasoning = next(
            (plain[key] for key in _REASONING_FIELDS if plain.get(key) is not None), None
        )
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        prepared.append(plain)
    return prepared


def render(
    template: jinja2.Template,
    messages: list[Any],
    *,
    add_generation_prompt: bool,
    special_tokens: Mapping[str, str],
    template_kwargs: Mapping[str, Any],
) -> str:
    """Render like ``tokenizer.apply_chat_template(messages, tokenize=False, ...)``.

    Raises jinja2 errors (TemplateError, UndefinedError, SecurityError) and TypeError.
    """
    kwargs = plain_data({**special_tokens, **template_kwargs})
    return template.render(
        messages=prepare_messages(messages),
        tools=None,
        documents=None,
        add_generation_prompt=add_generation_prompt,
        **kwargs,
    )
