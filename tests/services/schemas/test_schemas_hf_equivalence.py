"""Our renderer against transformers' own apply_chat_template, byte for byte.

Every real HF template in tests/fixtures/chat_templates is rendered by
``services.schemas.Renderer`` (jinja2 only) and by a transformers fast tokenizer built
locally with the fixture's special tokens and chat_template, for every conversation
below, with and without add_generation_prompt.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.schemas import Renderer, load_schema
from tests.services.schemas.schemas_helpers import (
    CHAT_TEMPLATES,
    CONVERSATIONS,
    FIXTURE_FAMILY,
    FIXTURE_NAMES,
    QWEN3,
    fixture_tokens,
    hf_render,
    template,
)


def ours(name: str) -> Renderer:
    return Renderer.from_template(
        template(name), fixture_tokens(name), load_schema(FIXTURE_FAMILY[name])
    )


def test_every_fixture_template_is_covered():
    on_disk = sorted(p.stem for p in CHAT_TEMPLATES.glob("*.jinja"))
    assert on_disk == FIXTURE_NAMES


@pytest.mark.parametrize("add_generation_prompt", [False, True], ids=["plain", "gen"])
@pytest.mark.parametrize("case", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_render_is_byte_equal_to_transformers(name: str, case: str, add_generation_prompt: bool):
    messages = CONVERSATIONS[case]
    expected = hf_render(template(name), fixture_tokens(name), messages, add_generation_prompt)
    assert ours(name).render(messages, add_generation_prompt=add_generation_prompt) == expected


@pytest.mark.parametrize("family", ["qwen", "llama", "phi", "gptj", "smollm"])
@pytest.mark.parametrize("add_generation_prompt", [False, True], ids=["plain", "gen"])
def test_family_fallback_is_byte_equal_to_transformers(family: str, add_generation_prompt: bool):
    schema = load_schema(family)
    renderer = Renderer.from_family(family)
    for messages in CONVERSATIONS.values():
        expected = hf_render(
            schema.chat_template, schema.special_tokens, messages, add_generation_prompt
        )
        assert renderer.render(messages, add_generation_prompt) == expected


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        *[(n, {"enable_thinking": False}) for n in QWEN3],
        *[(n, {"enable_thinking": True}) for n in QWEN3],
        ("meta-llama-Llama-3.1-8B-Instruct", {"date_string": "01 Jan 2025"}),
    ],
)
@pytest.mark.parametrize("add_generation_prompt", [False, True], ids=["plain", "gen"])
def test_template_kwargs_reach_the_template(
    name: str, kwargs: dict[str, Any], add_generation_prompt: bool
):
    for messages in CONVERSATIONS.values():
        expected = hf_render(
            template(name), fixture_tokens(name), messages, add_generation_prompt, **kwargs
        )
        assert ours(name).render(messages, add_generation_prompt, **kwargs) == expected


def test_qwen3_non_thinking_prompt_differs_and_is_reproduced():
    messages = CONVERSATIONS["user"]
    rendered = ours("Qwen-Qwen3-1.7B").render(messages, True, enable_thinking=False)
    assert rendered.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_strftime_now_and_tojson_match_transformers():
    # Globals and filters templates rely on: tojson without HTML escaping, with indent.
    probe = (
        "{{ messages[0]['content'] | tojson }}|{{ {'a': '<b>&', 'n': 1} | tojson(indent=2) }}|"
        "{{ strftime_now('%Y') }}|{% for m in messages %}{% if loop.first %}{% continue %}"
        "{% endif %}{{ m['role'] }}{% endfor %}|{{ namespace(x=1).x }}|{{ dict(a=1)['a'] }}"
    )
    messages = [{"role": "user", "content": '<é> & "q"'}, {"role": "assistant", "content": "x"}]
    tokens = {"eos_token": "</s>"}
    renderer = Renderer.from_template(probe, tokens, load_schema("qwen"))
    for gen in (False, True):
        assert renderer.render(messages, gen) == hf_render(probe, tokens, messages, gen)


def test_raise_exception_is_a_schema_error():
    from services.schemas import SchemaError

    gptj = Renderer.from_family("gptj")
    with pytest.raises(SchemaError, match="roles are supported"):
        gptj.render([{"role": "tool", "content": "x"}])


def test_generation_tag_renders_its_body():
    probe = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}"
        "{{ m['content'] + eos_token }}{% endgeneration %}{% else %}{{ m['content'] }}"
        "{% endif %}{% endfor %}"
    )
    tokens = {"eos_token": "</s>"}
    renderer = Renderer.from_template(probe, tokens, load_schema("qwen"))
    messages = CONVERSATIONS["user-assistant"]
    assert renderer.render(messages) == hf_render(probe, tokens, messages, False)


_PIECES = [*"abc XYZ\n\t {}%#'\"\\", "<thought>", "</world>", "<think>", "</think>", "é", "🙂"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=20).map("".join)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(_TEXT)})
    turns = draw(st.integers(min_value=1, max_value=5))
    for i in range(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": draw(_TEXT)})
    return messages


@pytest.mark.parametrize("name", FIXTURE_NAMES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(), add_generation_prompt=st.booleans())
def test_random_conversations_are_byte_equal(
    name: str, messages: list[dict[str, str]], add_generation_prompt: bool
):
    expected = hf_render(template(name), fixture_tokens(name), messages, add_generation_prompt)
    assert ours(name).render(messages, add_generation_prompt) == expected
