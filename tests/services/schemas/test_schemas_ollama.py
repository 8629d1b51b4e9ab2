"""Training text against what Ollama serves.

Which HF template maps to which Ollama template:

- By Ollama's own rule (template.Named: the index.json entry nearest by Levenshtein
  distance, accepted below 100), see ``OLLAMA_INDEX_MATCH``: SmolLM2 -> chatml (41),
  Llama 3.1 Instruct -> llama3-instruct (0), Phi-3-mini-4k -> zephyr (97!), and no
  match for Qwen2.5, Qwen3 (both revisions) or Phi-3.5.
- By personad's family schemas, see ``SERVED_BY``: the qwen family (Qwen2.5 fallback,
  Qwen3 models' own templates) and the smollm family are served with chatml, llama
  with llama3-instruct, phi (Phi-3.5 fallback, Phi-3-mini-4k's own) with phi-3. Each
  schema's TEMPLATE and stop are Ollama's files byte for byte.

Where the two renderings differ, the exact difference is asserted, and written in the
schema's notes.
"""

from __future__ import annotations

import itertools

import pytest

from services.schemas import FAMILIES, Renderer, SchemaError, load_schema, render_ollama
from tests.services.schemas.schemas_helpers import (
    CONVERSATIONS,
    FIXTURE_FAMILY,
    FIXTURE_NAMES,
    SAMPLES,
    fixture_tokens,
    levenshtein,
    ollama_conversations,
    ollama_expected,
    ollama_named,
    ollama_params,
    ollama_template,
    template,
)

OLLAMA_CASES = ("user", "user-assistant-user", "system-user-assistant-user")
OLLAMA_TEMPLATES = ("chatml", "llama3-instruct", "phi-3")

# Ollama's template.Named() for each fixture: (name or None, Levenshtein distance).
OLLAMA_INDEX_MATCH = {
    "HuggingFaceTB-SmolLM2-135M-Instruct": ("chatml", 41),
    "Qwen-Qwen2.5-7B-Instruct": (None, 1662),
    "Qwen-Qwen3-0.6B": (None, 3019),
    "Qwen-Qwen3-1.7B": (None, 3084),
    "meta-llama-Llama-3.1-8B-Instruct": ("llama3-instruct", 0),
    "microsoft-Phi-3-mini-4k-instruct": ("zephyr", 97),
    "microsoft-Phi-3.5-mini-instruct": (None, 109),
}

# The Ollama template that serves each fixture HF template in personad.
SERVED_BY = {
    "Qwen-Qwen2.5-7B-Instruct": "chatml",
    "Qwen-Qwen3-0.6B": "chatml",
    "Qwen-Qwen3-1.7B": "chatml",
    "HuggingFaceTB-SmolLM2-135M-Instruct": "chatml",
    "meta-llama-Llama-3.1-8B-Instruct": "llama3-instruct",
    "microsoft-Phi-3-mini-4k-instruct": "phi-3",
    "microsoft-Phi-3.5-mini-instruct": "phi-3",
}

QWEN25_SYSTEM = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n"
)
SMOLLM2_SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n"
)
LLAMA_BOS = "<|begin_of_text|>"
LLAMA_DATE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
LLAMA_DATE_SYSTEM = f"<|start_header_id|>system<|end_header_id|>\n\n{LLAMA_DATE}<|eot_id|>"

# Exact known differences, HF rendering (add_generation_prompt=True) vs Ollama's
# expected rendering, per fixture and case; absent means byte-equal.
KNOWN_DIFFERENCES = {
    ("Qwen-Qwen2.5-7B-Instruct", "user"): lambda o: QWEN25_SYSTEM + o,
    ("Qwen-Qwen2.5-7B-Instruct", "user-assistant-user"): lambda o: QWEN25_SYSTEM + o,
    ("HuggingFaceTB-SmolLM2-135M-Instruct", "user"): lambda o: SMOLLM2_SYSTEM + o,
    ("HuggingFaceTB-SmolLM2-135M-Instruct", "user-assistant-user"): lambda o: SMOLLM2_SYSTEM + o,
    ("meta-llama-Llama-3.1-8B-Instruct", "user"): lambda o: LLAMA_BOS + LLAMA_DATE_SYSTEM + o,
    ("meta-llama-Llama-3.1-8B-Instruct", "user-assistant-user"): (
        lambda o: LLAMA_BOS + LLAMA_DATE_SYSTEM + o
    ),
    ("meta-llama-Llama-3.1-8B-Instruct", "system-user-assistant-user"): (
        lambda o: (
            LLAMA_BOS + o.replace("<|end_header_id|>\n\n", "<|end_header_id|>\n\n" + LLAMA_DATE, 1)
        )
    ),
}


def ours(name: str) -> Renderer:
    return Renderer.from_template(
        template(name), fixture_tokens(name), load_schema(FIXTURE_FAMILY[name])
    )


# -- the Go-template renderer reproduces Ollama's own test renderings -------------


@pytest.mark.parametrize("case", OLLAMA_CASES)
@pytest.mark.parametrize("name", OLLAMA_TEMPLATES)
def test_render_ollama_reproduces_ollama_testdata(name: str, case: str):
    messages = ollama_conversations()[case]
    assert render_ollama(ollama_template(name), messages) == ollama_expected(name, case)


# -- which Ollama template each HF template maps to -----------------------------


def test_levenshtein_is_the_edit_distance():
    def naive(a: str, b: str) -> int:
        prev = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            cur = [i]
            for j, cb in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
            prev = cur
        return prev[-1]

    pairs = [
        ("", ""),
        ("abc", ""),
        ("kitten", "sitting"),
        ("flaw", "lawn"),
        ("{% a %}", "{%- a %}"),
    ]
    pairs += [
        (
            template("microsoft-Phi-3-mini-4k-instruct")[:90],
            template("microsoft-Phi-3.5-mini-instruct")[:120],
        )
    ]
    for a, b in pairs:
        assert levenshtein(a, b) == naive(a, b) == levenshtein(b, a)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_ollama_index_maps_hf_templates(name: str):
    assert ollama_named(template(name)) == OLLAMA_INDEX_MATCH[name]


@pytest.mark.parametrize("family", ["qwen", "llama", "phi", "smollm"])
def test_schema_carries_ollama_template_and_stop_byte_for_byte(family: str):
    schema = load_schema(family)
    served = {"qwen": "chatml", "smollm": "chatml", "llama": "llama3-instruct", "phi": "phi-3"}[
        family
    ]
    assert schema.ollama_template_name == served
    assert schema.ollama_template == ollama_template(served)
    assert list(schema.stop) == ollama_params(served)["stop"]
    assert schema.ollama_parameters == ollama_params(served)
    assert {SERVED_BY[n] for n, f in FIXTURE_FAMILY.items() if f == family} == {served}


# -- HF rendering vs Ollama's expected rendering --------------------------------


@pytest.mark.parametrize("case", OLLAMA_CASES)
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_hf_rendering_vs_ollama_rendering(name: str, case: str):
    messages = ollama_conversations()[case]
    served = ollama_expected(SERVED_BY[name], case)
    rendered = ours(name).render(messages, add_generation_prompt=True)
    difference = KNOWN_DIFFERENCES.get((name, case))
    if difference is None:
        assert rendered == served
    else:
        assert rendered != served
        assert rendered == difference(served)


def test_user_case_equalities_are_stated():
    # The single-turn case, spelled out: which fixture renders exactly Ollama's text.
    equal = {n for n in FIXTURE_NAMES if (n, "user") not in KNOWN_DIFFERENCES}
    assert equal == {
        "Qwen-Qwen3-0.6B",
        "Qwen-Qwen3-1.7B",
        "microsoft-Phi-3-mini-4k-instruct",
        "microsoft-Phi-3.5-mini-instruct",
    }


@pytest.mark.parametrize(
    ("family", "needle"),
    [
        ("qwen", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
        ("smollm", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
        ("llama", "Cutting Knowledge Date: December 2023"),
        ("llama", "<|begin_of_text|>"),
        ("llama", "trims"),
        ("phi", "zephyr"),
        ("qwen", "<think>"),
    ],
)
def test_differences_are_documented_in_notes(family: str, needle: str):
    assert any(needle in note for note in load_schema(family).notes)


# -- serving with the schema's SYSTEM renders the training text ------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_ollama_system_is_what_the_template_needs(family: str):
    renderer = Renderer.from_family(family)
    assert renderer.ollama_system_prompt() == renderer.schema.ollama_system


def _served_prompt(messages: list[dict]) -> list[dict]:
    # The conversation a server sends: a sample without its final assistant turn.
    return messages[:-1] if messages[-1]["role"] == "assistant" else messages


def _serving_cases(family: str) -> list[str]:
    """The conversations on which serving must equal training for a family.

    Left out, each with a test of its own below: conversations Ollama merges
    (consecutive turns of one role), extra message fields Ollama's chat messages do
    not carry, and the documented differences: llama's date header with a system
    message and its trimming of content, Phi-3.5 skipping an empty system message.
    """
    cases = []
    for case, messages in sorted(CONVERSATIONS.items()):
        prompt = _served_prompt(messages)
        if any(a["role"] == b["role"] for a, b in itertools.pairwise(prompt)):
            continue
        if any(set(m) != {"role", "content"} for m in prompt):
            continue
        if family == "llama" and (
            prompt[0]["role"] == "system"
            or any(m["content"] != m["content"].strip() for m in prompt)
        ):
            continue
        if family == "phi" and prompt[0] == {"role": "system", "content": ""}:
            continue
        cases.append(case)
    return cases


@pytest.mark.parametrize("family", FAMILIES)
def test_serving_with_schema_system_renders_training_text(family: str):
    renderer = Renderer.from_family(family)
    cases = _serving_cases(family)
    assert len(cases) >= 10
    for case in cases:
        messages = _served_prompt(CONVERSATIONS[case])
        trained = renderer.render(messages, add_generation_prompt=True)
        if family == "llama":
            trained = trained.removeprefix(LLAMA_BOS)  # llama.cpp adds BOS itself
        assert renderer.render_ollama(messages, renderer.schema.ollama_system) == trained, case


def test_llama_trims_content_and_ollama_does_not():
    renderer = Renderer.from_family("llama")
    messages = [{"role": "user", "content": "  padded \n"}]
    trained = renderer.render(messages, add_generation_prompt=True).removeprefix(LLAMA_BOS)
    served = renderer.render_ollama(messages, renderer.schema.ollama_system)
    assert trained == served.replace("  padded \n", "padded")


def test_phi35_skips_an_empty_system_message_and_ollama_does_not():
    renderer = Renderer.from_family("phi")
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]
    trained = renderer.render(messages, add_generation_prompt=True)
    assert renderer.render_ollama(messages) == "<|system|>\n<|end|>\n" + trained


def test_llama_with_system_needs_the_date_header_in_the_system_message():
    renderer = Renderer.from_family("llama")
    messages = [{"role": "system", "content": "You are Ada."}, {"role": "user", "content": "Hi"}]
    trained = renderer.render(messages, add_generation_prompt=True).removeprefix(LLAMA_BOS)
    assert renderer.render_ollama(messages) != trained
    served = [{"role": "system", "content": LLAMA_DATE + "You are Ada."}, messages[1]]
    assert renderer.render_ollama(served) == trained


def test_qwen3_serves_as_chatml_without_a_system_prompt():
    for name in ("Qwen-Qwen3-0.6B", "Qwen-Qwen3-1.7B"):
        renderer = ours(name)
        assert renderer.ollama_system_prompt() is None
        for case in ("user", "user-assistant-user", "system-user-assistant-user"):
            messages = ollama_conversations()[case]
            assert renderer.render(messages, True) == renderer.render_ollama(messages)


def test_incompatible_template_has_no_serving_system():
    schema = load_schema("llama")
    renderer = Renderer.from_template(template("microsoft-Phi-3.5-mini-instruct"), {}, schema)
    with pytest.raises(SchemaError, match="cannot reproduce"):
        renderer.ollama_system_prompt()


# -- gptj: personad's own format, served by its own Go template ------------------


@pytest.mark.parametrize("case", _serving_cases("gptj"))
def test_gptj_ollama_template_renders_training_text(case: str):
    renderer = Renderer.from_family("gptj")
    messages = _served_prompt(CONVERSATIONS[case])
    assert renderer.render_ollama(messages) == renderer.render(messages, add_generation_prompt=True)


def test_gptj_format_is_as_documented():
    renderer = Renderer.from_family("gptj")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "Bye"},
    ]
    assert renderer.render(messages, add_generation_prompt=True) == (
        "### System:\nBe brief.\n\n### User:\nHello\n\n### Assistant:\nHi there.<|endoftext|>"
        "### User:\nBye\n\n### Assistant:\n"
    )
    example = "'### User:\\nHello\\n\\n### Assistant:\\nHi there.<|endoftext|>'"
    assert any(example in note for note in renderer.schema.notes)
    rendered = renderer.render(
        [*SAMPLES["user-assistant"][:1], {"role": "assistant", "content": "Hi there."}]
    )
    assert rendered == "### User:\nHello, how are you?\n\n### Assistant:\nHi there.<|endoftext|>"


# -- the Go-template subset --------------------------------------------------------


def test_render_ollama_collates_like_ollama():
    tmpl = ollama_template("chatml")
    messages = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    assert render_ollama(tmpl, messages) == (
        "<|im_start|>user\na\n\nb<|im_end|>\n<|im_start|>assistant\nc<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = render_ollama(tmpl, messages[:1], system="S")
    assert with_system.startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na")
    own_system = [{"role": "system", "content": "Mine"}, *messages[:1]]
    assert "S<|im_end|>" not in render_ollama(tmpl, own_system, system="S")


def test_render_ollama_conditionals_and_trim():
    tmpl = (
        "{{- if .System }}SYS={{ .System }} {{ end -}}\n  {{ range .Messages }}"
        '{{ if eq .Role "user" }}U:{{ .Content }}{{ else if ne .Role "system" }}A:{{ .Content }}'
        "{{ else }}{{/* skip */}}{{ end }};{{ end }}{{ if and .System (not .Tools) }}!{{ end }}"
        '{{ if or .Tools "x" }}?{{ end }}'
    )
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
    assert render_ollama(tmpl, messages) == "SYS=s ;U:u;A:a;!?"


@pytest.mark.parametrize(
    "tmpl",
    [
        "{{ range $i, $m := .Messages }}{{ end }}",
        "{{ json .Tools }}",
        "{{ if .System }}x",
        "{{ end }}",
        "{{ .Content",
        "{{ range .Messages }}{{ else }}{{ end }}",
    ],
)
def test_render_ollama_rejects_what_it_does_not_support(tmpl: str):
    with pytest.raises(SchemaError):
        render_ollama(tmpl, [{"role": "user", "content": "x"}])
