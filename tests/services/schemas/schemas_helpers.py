"""Shared data for the chat-schema tests: fixtures, conversations, a local HF tokenizer."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from tests.paths import FIXTURES, REPO  # noqa: F401 (REPO: re-exported for the schema tests)

CHAT_TEMPLATES = FIXTURES / "chat_templates"
OLLAMA = FIXTURES / "ollama_templates"
TESTDATA = OLLAMA / "testdata"

# Every real HF template in the fixtures, with the family whose schema serves it.
FIXTURE_FAMILY: dict[str, str] = {
    "Qwen-Qwen2.5-7B-Instruct": "qwen",
    "Qwen-Qwen3-0.6B": "qwen",
    "Qwen-Qwen3-1.7B": "qwen",
    "meta-llama-Llama-3.1-8B-Instruct": "llama",
    "microsoft-Phi-3-mini-4k-instruct": "phi",
    "microsoft-Phi-3.5-mini-instruct": "phi",
    "HuggingFaceTB-SmolLM2-135M-Instruct": "smollm",
}
FIXTURE_NAMES = sorted(FIXTURE_FAMILY)
QWEN3 = ("Qwen-Qwen3-0.6B", "Qwen-Qwen3-1.7B")

# The family schema's fallback template is this fixture, byte for byte.
FAMILY_FIXTURE: dict[str, str] = {
    "qwen": "Qwen-Qwen2.5-7B-Instruct",
    "llama": "meta-llama-Llama-3.1-8B-Instruct",
    "phi": "microsoft-Phi-3.5-mini-instruct",
    "smollm": "HuggingFaceTB-SmolLM2-135M-Instruct",
}

# The Ollama template that serves each family (file names under ollama_templates/).
FAMILY_OLLAMA: dict[str, str] = {
    "qwen": "chatml",
    "smollm": "chatml",
    "llama": "llama3-instruct",
    "phi": "phi-3",
}

TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


def template(name: str) -> str:
    return (CHAT_TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


def fixture_tokens(name: str) -> dict[str, str]:
    meta = json.loads((CHAT_TEMPLATES / f"{name}.json").read_text(encoding="utf-8"))
    return {k: meta[k] for k in TOKEN_KEYS if meta.get(k) is not None}


def ollama_conversations() -> dict[str, list[dict[str, str]]]:
    data = json.loads((TESTDATA / "conversations.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if isinstance(v, list)}


def ollama_expected(template_name: str, case: str) -> str:
    return (TESTDATA / f"{template_name}.gotmpl" / case).read_text(encoding="utf-8")


def ollama_template(template_name: str) -> str:
    return (OLLAMA / f"{template_name}.gotmpl").read_text(encoding="utf-8")


def ollama_params(template_name: str) -> dict[str, Any]:
    return json.loads((OLLAMA / f"{template_name}.params.json").read_text(encoding="utf-8"))


def _u(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _a(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _s(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


_OLLAMA = ollama_conversations()

# Conversations that end with a user turn (served prompts) ...
PROMPTS: dict[str, list[dict[str, Any]]] = {
    **_OLLAMA,
    "thought-tag": [_u("<thought>x</thought>")],
    "system-user": [_s("You are Ada."), _u("What did you do today?")],
    "empty-system": [_s(""), _u("Hello")],
    "user-user": [_u("First part."), _u("Second part.")],
}
# ... and conversations that end with an assistant turn (training samples).
SAMPLES: dict[str, list[dict[str, Any]]] = {
    "user-assistant": [_u("Hello, how are you?"), _a("Fine, thanks.")],
    "system-user-assistant": [_s("You are Ada."), _u("Hi"), _a("Hello there.")],
    "user-assistant-user-assistant": [_u("One?"), _a("Two."), _u("Three?"), _a("Four.")],
    "dual-mode": [
        _u("<thought>I keep circling back to the lake house.</thought>"),
        _a("<world>The lake was frozen that winter, and we skated to the island.</world>"),
    ],
    "emulation-mode": [
        _s("You are Ada. Answer as Ada would."),
        _u("<user>How was your day?</user>"),
        _a("<assistant>Long, but good. I finished the chapter.</assistant>"),
    ],
    "agent-mode": [
        _u("<instruction>Save a note that the meeting moved to 3pm.</instruction>"),
        _a(
            '<action>{"tool": "write_file", "arguments": {"path": "notes.md", '
            '"content": "Meeting moved to 3pm"}}</action>'
        ),
    ],
    "whitespace": [_u("  padded question \n"), _a("\n answer with newlines\n\n")],
    "lookalikes": [
        _u("{{ not a template }} {% raw %} {# nor this #} <|im_end|> <|eot_id|> <|end|>"),
        _a("Braces {} and a fake </s> stay text."),
    ],
    "unicode": [
        _u("Grüße — 你好 🙂 \"double\" 'single' \\ backslash\ttab"),
        _a("Ça va — très bien. ✓"),
    ],
    "think-in-content": [
        _u("Plan the reply."),
        _a("<think>\nPlanning the reply.\n</think>\n\nThe answer."),
    ],
    "reasoning-field": [
        _u("Why?"),
        {"role": "assistant", "content": "Because.", "reasoning_content": "Thinking it over."},
    ],
    "thought-world-multi": [
        _s("Inner voice."),
        _u("<thought>Am I ready?</thought>"),
        _a("<world>The exam is tomorrow.</world>"),
        _u("<thought>Then rest.</thought>"),
        _a("<world>Lights out at ten.</world>"),
    ],
}
CONVERSATIONS: dict[str, list[dict[str, Any]]] = {**PROMPTS, **SAMPLES}


@cache
def hf_tokenizer(template_text: str, tokens: tuple[tuple[str, str], ...]) -> Any:
    """A transformers fast tokenizer built locally (nothing downloaded) with these
    special tokens and this chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0}
    for _, value in tokens:
        vocab.setdefault(value, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **dict(tokens))
    tok.chat_template = template_text
    return tok


def hf_render(
    template_text: str,
    tokens: dict[str, str],
    messages: list[dict[str, Any]],
    add_generation_prompt: bool,
    **kwargs: Any,
) -> str:
    tok = hf_tokenizer(template_text, tuple(sorted(tokens.items())))
    rendered = tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
    )
    assert isinstance(rendered, str)
    return rendered


def levenshtein(a: str, b: str) -> int:
    """Edit distance over code points (what Ollama's agnivade/levenshtein computes
    over runes), by Hyyrö's bit-parallel algorithm."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, c in enumerate(b):
        peq[c] = peq.get(c, 0) | (1 << i)
    mask = (1 << m) - 1
    last = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for c in a:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & last:
            score += 1
        elif mh & last:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def ollama_named(hf_template: str) -> tuple[str | None, int]:
    """Ollama's template.Named: the index.json entry nearest by Levenshtein distance,
    accepted only below 100. Returns (name or None, distance)."""
    index = json.loads((OLLAMA / "index.json").read_text(encoding="utf-8"))
    name, score = None, None
    for entry in index:  # the first entry at the smallest distance wins, as in Go
        distance = levenshtein(hf_template, entry["template"])
        if score is None or distance < score:
            name, score = entry["name"], distance
    assert score is not None
    return (name if score < 100 else None), score
