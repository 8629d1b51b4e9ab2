"""Render conversations into a model family's exact training text."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from services.schemas import _jinja
from services.schemas.detect import family_of
from services.schemas.errors import SchemaError
from services.schemas.model_files import read_model
from services.schemas.ollama import render_ollama
from services.schemas.schema import ChatSchema, load_schema

Message = Mapping[str, Any]

# Private-use characters: no template transforms them, no real content holds them.
_SENTINEL = "\ue000personad\ue001"
_SENTINEL_SYSTEM = "\ue000personad-system\ue001"

# Keys apply_chat_template passes itself; a caller may not override them.
_RESERVED = frozenset({"messages", "tools", "documents", "add_generation_prompt"})


class Renderer:
    """A chat template with its special tokens, rendering like ``apply_chat_template``.

    ``schema`` is the family schema with the template and special tokens actually in
    use (the model's own, gaps filled from the family file). ``special_tokens`` are
    the values the template receives, exactly as transformers would pass them for
    the same tokenizer; ``template_source`` says where the template came from.
    """

    def __init__(
        self,
        template: str,
        special_tokens: Mapping[str, str],
        schema: ChatSchema,
        *,
        template_source: str | None = None,
    ) -> None:
        try:
            self._compiled = _jinja.compile_template(template)
        except jinja2.TemplateSyntaxError as exc:
            raise SchemaError(f"chat template does not parse: {exc}", key="chat_template") from exc
        self.special_tokens: dict[str, str] = {
            k: v for k, v in special_tokens.items() if v is not None
        }
        self.template_source = template_source
        tokens = self.special_tokens
        self.schema: ChatSchema = dataclasses.replace(
            schema,
            chat_template=template,
            bos_token=tokens.get("bos_token", schema.bos_token),
            eos_token=tokens.get("eos_token", schema.eos_token),
            pad_token=tokens.get("pad_token", schema.pad_token),
            unk_token=tokens.get("unk_token", schema.unk_token),
        )

    # -- construction ------------------------------------------------------------

    @classmethod
    def from_family(cls, family: str, etc_dir: Path | None = None) -> Renderer:
        """The family's fallback template and tokens from ``etc/schemas/<family>.json``."""
        schema = load_schema(family, etc_dir)
        return cls(
            schema.chat_template,
            schema.special_tokens,
            schema,
            template_source=str(schema.path) if schema.path else None,
        )

    @classmethod
    def from_model_dir(
        cls, path: Path, family: str | None = None, etc_dir: Path | None = None
    ) -> Renderer:
        """The model's own chat template and special tokens; the schema fills gaps.

        ``path`` is a Hugging Face model directory or a ``.gguf`` file. With a template
        of its own, the template receives exactly the model's special tokens (what
        transformers passes); without one, the family's fallback template receives
        the model's tokens completed by the family's.
        """
        path = Path(path)
        info = read_model(path)
        schema = load_schema(family or family_of(info, etc_dir), etc_dir)
        if info.chat_template is not None:
            return cls(
                info.chat_template,
                info.special_tokens,
                schema,
                template_source=info.template_source,
            )
        tokens = {**schema.special_tokens, **info.special_tokens}
        return cls(
            schema.chat_template,
            tokens,
            schema,
            template_source=str(schema.path) if schema.path else None,
        )

    @classmethod
    def from_template(
        cls, template: str, special_tokens: dict[str, str], schema: ChatSchema
    ) -> Renderer:
        """A given template and the special tokens it receives, under ``schema``."""
        return cls(template, special_tokens, schema)

    # -- rendering ---------------------------------------------------------------

    @property
    def template(self) -> str:
        return self.schema.chat_template

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        **template_kwargs: Any,
    ) -> str:
        """The text ``apply_chat_template(messages, tokenize=False, ...)`` returns.

        ``template_kwargs`` reach the template like apply_chat_template's extra
        keyword arguments (for example ``enable_thinking=False``, ``date_string``).
        """
        if not messages:
            raise SchemaError("cannot render an empty conversation")
        reserved = _RESERVED.intersection(template_kwargs)
        if reserved:
            raise SchemaError(f"reserved template arguments: {', '.join(sorted(reserved))}")
        try:
            return _jinja.render(
                self._compiled,
                list(messages),
                add_generation_prompt=add_generation_prompt,
                special_tokens=self.special_tokens,
                template_kwargs=template_kwargs,
            )
        except (jinja2.TemplateError, TypeError) as exc:
            raise SchemaError(f"{self.schema.family} chat template failed: {exc}") from exc

    def split(self, messages: Sequence[Message], **template_kwargs: Any) -> tuple[str, str]:
        """(prompt, completion) of a conversation that ends with an assistant turn.

        ``prompt + completion == render(messages)``. The prompt is what serving sends:
        ``render(messages[:-1], add_generation_prompt=True)``, the conversation so far
        up to and including the generation prompt; the completion is the rest, the
        final assistant turn through its end-of-turn token(s) (and whatever the
        template writes after it, such as Phi-3's closing eos). The loss belongs on
        the completion: the text the served model must produce after that prompt.

        A template may render the final assistant turn with more than its content.
        Qwen3 opens it with an empty ``<think>\\n\\n</think>\\n\\n`` block; Ollama's
        chatml TEMPLATE, which serves the qwen family, does not write that block, so
        it is the model's to produce and stays in the completion. Pass
        ``enable_thinking=False`` to move it into the prompt instead (Qwen3's own
        non-thinking generation prompt). Qwen3 content that carries
        ``<think>reasoning</think>`` keeps the reasoning in the completion.

        Where the generation prompt is not a prefix of the whole rendering (a
        template that changes earlier turns when the conversation ends with an
        assistant turn, or one whose generation prompt differs from the assistant
        header it renders, like DeepSeek-R1's ``<think>\n``), and for a lone
        assistant turn, the prompt is instead the rendering up to the start of the
        final assistant content. If even that is not a prefix, SchemaError.
        """
        if not messages or messages[-1].get("role") != "assistant":
            raise SchemaError("split() needs a conversation that ends with an assistant turn")
        full = self.render(messages, **template_kwargs)
        if len(messages) > 1:
            prompt = self.render(messages[:-1], add_generation_prompt=True, **template_kwargs)
            if full.startswith(prompt):
                return prompt, full[len(prompt) :]
        probe = [*messages[:-1], {**messages[-1], "content": _SENTINEL}]
        rendered = self.render(probe, **template_kwargs)
        at = rendered.find(_SENTINEL)
        if at > 0 and full.startswith(rendered[:at]):
            return rendered[:at], full[at:]
        raise SchemaError(
            f"cannot split this conversation with the {self.schema.family} template: "
            "the text before the final assistant content depends on that content"
        )

    def continuation(self, text: str) -> str:
        """Plain text followed by the eos token, for prose (style) samples."""
        return text + self.schema.eos_token

    # -- serving -----------------------------------------------------------------

    def render_ollama(self, messages: Sequence[Message], system: str | None = None) -> str:
        """The prompt Ollama builds with this family's TEMPLATE (generation prompt included)."""
        return render_ollama(self.schema.ollama_template, messages, system)

    def ollama_system_prompt(self) -> str | None:
        """The Modelfile SYSTEM that makes Ollama render like this template, or None.

        Some templates write a system turn when a conversation has none (Qwen2.5's
        "You are Qwen...", SmolLM2's "You are a helpful AI assistant named SmolLM...",
        Llama 3.1's knowledge-cutoff and date header). Ollama puts a Modelfile SYSTEM
        first when a request has no system message, so serving with this SYSTEM
        renders such conversations exactly as training did. A leading BOS in the
        rendering is allowed for: the runtime's tokenizer adds it (llama.cpp's
        add_bos_token), so Ollama templates do not write it.

        Raises SchemaError when no SYSTEM makes the two agree.
        """
        probes: list[list[Message]] = [
            [{"role": "user", "content": _SENTINEL}],
            [
                {"role": "user", "content": _SENTINEL},
                {"role": "assistant", "content": _SENTINEL},
                {"role": "user", "content": _SENTINEL},
            ],
        ]
        renderings = [self.render(p, add_generation_prompt=True) for p in probes]
        variants = [renderings]
        bos = self.schema.bos_token
        if bos and all(r.startswith(bos) for r in renderings):
            variants.append([r[len(bos) :] for r in renderings])
        marked = self.render_ollama([{"role": "system", "content": _SENTINEL_SYSTEM}, *probes[0]])
        head, _, tail = marked.partition(_SENTINEL_SYSTEM)
        for targets in variants:
            if all(t == self.render_ollama(p) for t, p in zip(targets, probes, strict=True)):
                return None
            first = targets[0]
            if not (first.startswith(head) and first.endswith(tail)):
                continue
            system = first[len(head) : len(first) - len(tail)]
            if len(first) > len(head + tail) and all(
                t == self.render_ollama(p, system) for t, p in zip(targets, probes, strict=True)
            ):
                return system
        raise SchemaError(
            f"Ollama's {self.schema.family} TEMPLATE cannot reproduce this chat template, "
            "whatever the SYSTEM"
        )
