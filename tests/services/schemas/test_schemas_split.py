"""split(): prompt + completion is the whole rendering; the loss is on the completion."""

from __future__ import annotations

import pytest

from services.schemas import Renderer, SchemaError, load_schema
from tests.services.schemas.schemas_helpers import (
    FIXTURE_FAMILY,
    FIXTURE_NAMES,
    QWEN3,
    SAMPLES,
    fixture_tokens,
    hf_render,
    template,
)

# What ends a sample's completion (the final assistant turn's end-of-turn tokens and
# whatever the template writes after it) for each fixture template.
TURN_END = {
    "Qwen-Qwen2.5-7B-Instruct": "<|im_end|>\n",
    "Qwen-Qwen3-0.6B": "<|im_end|>\n",
    "Qwen-Qwen3-1.7B": "<|im_end|>\n",
    "HuggingFaceTB-SmolLM2-135M-Instruct": "<|im_end|>\n",
    "meta-llama-Llama-3.1-8B-Instruct": "<|eot_id|>",
    "microsoft-Phi-3-mini-4k-instruct": "<|end|>\n<|endoftext|>",
    "microsoft-Phi-3.5-mini-instruct": "<|end|>\n<|endoftext|>",
}
FAMILY_TURN_END = {
    "qwen": "<|im_end|>\n",
    "smollm": "<|im_end|>\n",
    "llama": "<|eot_id|>",
    "phi": "<|end|>\n<|endoftext|>",
    "gptj": "<|endoftext|>",
}
QWEN3_EMPTY_THINK = "<think>\n\n</think>\n\n"


def ours(name: str) -> Renderer:
    return Renderer.from_template(
        template(name), fixture_tokens(name), load_schema(FIXTURE_FAMILY[name])
    )


def expected_content(name: str, messages: list[dict]) -> str:
    """The final assistant content as the template writes it."""
    last = messages[-1]
    content = last["content"]
    if name.startswith("meta-llama"):
        return content.strip()
    if name in QWEN3:
        reasoning = last.get("reasoning_content")
        if "</think>" in content:
            reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
            content = content.split("</think>")[-1].lstrip("\n")
        return f"<think>\n{(reasoning or '').strip(chr(10))}\n</think>\n\n{content.lstrip(chr(10))}"
    return content


@pytest.mark.parametrize("case", sorted(SAMPLES))
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_split_invariants(name: str, case: str):
    renderer = ours(name)
    messages = SAMPLES[case]
    prompt, completion = renderer.split(messages)
    full = renderer.render(messages)
    assert prompt + completion == full
    # The prompt is exactly the served prompt, as transformers renders it.
    tokens = fixture_tokens(name)
    assert prompt == hf_render(template(name), tokens, messages[:-1], True)
    assert full == hf_render(template(name), tokens, messages, False)
    # The completion is the final assistant turn through its end-of-turn tokens.
    assert completion == expected_content(name, messages) + TURN_END[name]
    # Earlier assistant turns are context, not loss.
    for earlier in messages[:-1]:
        if earlier["role"] == "assistant":
            assert earlier["content"].strip() in prompt


@pytest.mark.parametrize("family", ["qwen", "llama", "phi", "gptj", "smollm"])
@pytest.mark.parametrize("case", sorted(SAMPLES))
def test_split_invariants_for_family_fallbacks(family: str, case: str):
    renderer = Renderer.from_family(family)
    messages = SAMPLES[case]
    prompt, completion = renderer.split(messages)
    assert prompt + completion == renderer.render(messages)
    assert prompt == renderer.render(messages[:-1], add_generation_prompt=True)
    content = messages[-1]["content"]
    assert (
        completion == (content.strip() if family == "llama" else content) + FAMILY_TURN_END[family]
    )


@pytest.mark.parametrize("name", QWEN3)
def test_qwen3_empty_think_block_is_in_the_completion(name: str):
    renderer = ours(name)
    messages = SAMPLES["emulation-mode"]
    prompt, completion = renderer.split(messages)
    # The prompt is what Ollama's chatml TEMPLATE sends: it ends at the assistant header.
    assert prompt == renderer.render_ollama(messages[:-1])
    assert prompt.endswith("<|im_start|>assistant\n")
    assert completion == QWEN3_EMPTY_THINK + messages[-1]["content"] + "<|im_end|>\n"


@pytest.mark.parametrize("name", QWEN3)
def test_qwen3_non_thinking_split_puts_the_block_in_the_prompt(name: str):
    renderer = ours(name)
    messages = SAMPLES["dual-mode"]
    prompt, completion = renderer.split(messages, enable_thinking=False)
    assert prompt.endswith("<|im_start|>assistant\n" + QWEN3_EMPTY_THINK)
    assert completion == messages[-1]["content"] + "<|im_end|>\n"
    assert prompt + completion == renderer.render(messages, enable_thinking=False)
    assert prompt == hf_render(
        template(name), fixture_tokens(name), messages[:-1], True, enable_thinking=False
    )


@pytest.mark.parametrize("name", QWEN3)
def test_qwen3_reasoning_stays_in_the_completion(name: str):
    prompt, completion = ours(name).split(SAMPLES["think-in-content"])
    assert prompt.endswith("<|im_start|>assistant\n")
    assert completion == "<think>\nPlanning the reply.\n</think>\n\nThe answer.<|im_end|>\n"


def test_qwen3_multi_turn_drops_earlier_reasoning():
    renderer = ours("Qwen-Qwen3-1.7B")
    messages = [
        {"role": "user", "content": "One?"},
        {"role": "assistant", "content": "<think>\nhidden\n</think>\n\nTwo."},
        {"role": "user", "content": "Three?"},
        {"role": "assistant", "content": "Four."},
    ]
    prompt, completion = renderer.split(messages)
    assert "hidden" not in prompt
    assert "<|im_start|>assistant\nTwo.<|im_end|>\n" in prompt
    assert completion == QWEN3_EMPTY_THINK + "Four.<|im_end|>\n"


# A template (DeepSeek-R1 style) whose generation prompt opens a think block that the
# rendered assistant turn does not have: the generation prompt is not a prefix.
R1_STYLE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '<U>' + m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{% set c = m['content'] %}"
    "{% if '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "{{ '<A>' + c + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<A><think>\\n' }}{% endif %}"
)


def test_split_falls_back_to_the_start_of_the_assistant_content():
    renderer = Renderer.from_template(R1_STYLE, {"eos_token": "</s>"}, load_schema("qwen"))
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    prompt, completion = renderer.split(messages)
    assert (prompt, completion) == ("<U>Hi<A>", "Hello</s>")


def test_split_of_a_lone_assistant_turn():
    renderer = Renderer.from_family("smollm")
    prompt, completion = renderer.split([{"role": "assistant", "content": "Just prose."}])
    assert prompt.endswith("<|im_start|>assistant\n")
    assert completion == "Just prose.<|im_end|>\n"


def test_split_refuses_what_it_cannot_split():
    # The text before the final assistant content depends on that content.
    odd = (
        "{{ messages[-1]['content'] | length }}|{% for m in messages %}"
        "{{ m['role'] + ':' + m['content'] + ';' }}{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    renderer = Renderer.from_template(odd, {"eos_token": "</s>"}, load_schema("qwen"))
    with pytest.raises(SchemaError, match="cannot split"):
        renderer.split([{"role": "user", "content": "a"}, {"role": "assistant", "content": "bb"}])


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "user", "content": "a"}],
        [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
    ],
)
def test_split_needs_a_final_assistant_turn(messages: list[dict]):
    with pytest.raises(SchemaError):
        Renderer.from_family("qwen").split(messages)


@pytest.mark.parametrize("family", ["qwen", "llama", "phi", "gptj", "smollm"])
def test_continuation_is_text_and_eos(family: str):
    renderer = Renderer.from_family(family)
    text = "It rained all week.\n\nThen, on Sunday, the sun."
    assert renderer.continuation(text) == text + load_schema(family).eos_token


def test_render_refuses_empty_and_reserved():
    renderer = Renderer.from_family("qwen")
    with pytest.raises(SchemaError):
        renderer.render([])
    with pytest.raises(SchemaError, match="reserved"):
        renderer.render([{"role": "user", "content": "x"}], tools=[])
