"""Loading a model for inference and generating text, in-process and as ``python -m
services.generation`` (one answer, or serving JSON lines with ``--serve``), on a tiny
locally built model (with and without a LoRA adapter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.training.command import ExitCode
from services.training.errors import BadInputError
from services.training.inference import (
    _answer_ngram_blocker,
    banned_next_tokens,
    cut_at_stop,
    default_stops,
    generate,
    generate_answer,
    generate_answers,
    load_for_inference,
)
from tests.services.training.training_helpers import REPO, conversation


def prompt_of(tokenizer: Any, i: int = 0) -> str:
    return str(
        tokenizer.apply_chat_template(
            conversation(i)[:-1], tokenize=False, add_generation_prompt=True
        )
    )


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A LoRA adapter with random (non-zero) weights, saved with the tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("adapter")
    config = LoraConfig(
        r=4, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), config).save_pretrained(
        str(out)
    )
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "services.generation", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_cli_prints_the_text_generate_writes(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any, random_adapter: Path
) -> None:
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(prompt_of(tiny_tokenizer))
    cache = tmp_path / "cache"

    model, tokenizer = load_for_inference(tiny_model, cache_dir=cache)
    plain = generate(model, tokenizer, prompt_file.read_text(), max_new_tokens=12)
    adapted_model, adapted_tok = load_for_inference(
        tiny_model, adapter=random_adapter, cache_dir=cache
    )
    adapted = generate(adapted_model, adapted_tok, prompt_file.read_text(), max_new_tokens=12)
    assert plain and adapted and plain != adapted  # the adapter changes what is written

    common = ["--model", str(tiny_model), "--cache-dir", str(cache)]
    common += ["--prompt-file", str(prompt_file), "--max-new-tokens", "12"]
    plain_stopped = generate_answer(model, tokenizer, prompt_file.read_text(), 12).stopped
    adapted_stopped = generate_answer(
        adapted_model, adapted_tok, prompt_file.read_text(), 12
    ).stopped
    proc = run_cli(*common)
    assert proc.returncode == ExitCode.OK, proc.stderr[-2000:]
    assert proc.stdout.count("\n") == 1  # stdout holds the answer and nothing else
    assert json.loads(proc.stdout) == {"text": plain, "stopped": plain_stopped}

    proc = run_cli(*common, "--adapter", str(random_adapter))
    assert proc.returncode == ExitCode.OK, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {"text": adapted, "stopped": adapted_stopped}


def test_a_merged_adapter_answers_as_the_adapter_does_without_its_extra_layers(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any, random_adapter: Path
) -> None:
    cache = tmp_path / "cache"
    apart, tokenizer = load_for_inference(tiny_model, adapter=random_adapter, cache_dir=cache)
    merged, _ = load_for_inference(tiny_model, adapter=random_adapter, cache_dir=cache, merge=True)
    # What ask's workers serve: a plain model, the adapter folded into its weights once ...
    assert any("lora_" in name for name, _ in apart.named_modules())
    assert not any("lora_" in name for name, _ in merged.named_modules())
    # ... writing what the adapter writes.
    for i in range(3):
        prompt = prompt_of(tiny_tokenizer, i)
        assert generate_answer(merged, tokenizer, prompt, 16) == generate_answer(
            apart, tokenizer, prompt, 16
        )


def test_the_cli_reports_unusable_input_as_json(tmp_path: Path, random_adapter: Path) -> None:
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("hello")
    proc = run_cli(
        "--model",
        str(random_adapter),
        "--cache-dir",
        str(tmp_path),
        "--prompt-file",
        str(prompt_file),
    )
    assert proc.returncode == ExitCode.BAD_INPUT
    error = json.loads(proc.stdout)["error"]
    assert "is a LoRA adapter" in error and str(random_adapter) in error


def test_a_missing_model_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file or directory"):
        load_for_inference(tmp_path / "nowhere", cache_dir=tmp_path)


def test_generation_stops_at_a_stop_string_and_leaves_it_out(
    tiny_model: Path, tiny_tokenizer: Any
) -> None:
    model, tokenizer = load_for_inference(tiny_model, cache_dir=tiny_model.parent / "cache")
    prompt = prompt_of(tiny_tokenizer, 3)
    free = generate(model, tokenizer, prompt, max_new_tokens=16, stop=[])
    assert len(free) > 6
    stop = free[4:6]
    cut = generate(model, tokenizer, prompt, max_new_tokens=16, stop=[stop])
    assert cut == free[: free.index(stop)]
    assert generate(model, tokenizer, prompt, max_new_tokens=0) == ""
    # generate_answer says why it ended: the stop string, or the tokens running out.
    assert generate_answer(model, tokenizer, prompt, 16, stop=[stop]) == (cut, True)
    assert generate_answer(model, tokenizer, prompt, 16, stop=[]) == (free, False)
    assert generate_answer(model, tokenizer, prompt, 0) == ("", False)


def test_answers_in_batches_are_the_answers_one_at_a_time(
    tiny_model: Path, tiny_tokenizer: Any, random_adapter: Path
) -> None:
    # The gate answers its fidelity probes in batches; they must be the answers ask gives.
    model, tokenizer = load_for_inference(
        tiny_model, adapter=random_adapter, cache_dir=tiny_model.parent / "cache", merge=True
    )
    prompts = [prompt_of(tiny_tokenizer, i) for i in range(5)] + ["Hi", prompt_of(tiny_tokenizer)]
    free = [generate_answer(model, tokenizer, p, 16, stop=[]) for p in prompts]
    assert not any(a.stopped for a in free)
    # One answer ends at a stop string, one at the first stop token, the rest run out.
    stop_string = free[2].text[5:8]
    stop_token = tokenizer.convert_ids_to_tokens(tokenizer(free[4].text)["input_ids"][3])
    stops = [stop_string, stop_token]
    for no_repeat in (0, 3):
        one = [generate_answer(model, tokenizer, p, 16, 0.0, stops, no_repeat) for p in prompts]
        assert one[2].stopped and one[4].stopped and not all(a.stopped for a in one)
        many = generate_answers(model, tokenizer, prompts, 16, 0.0, stops, no_repeat, batch_size=3)
        assert many == one
    assert generate_answers(model, tokenizer, prompts, 0) == [("", False)] * len(prompts)


def test_the_default_stops_are_eos_and_the_family_stop_tokens(tiny_tokenizer: Any) -> None:
    # The tiny model speaks chatml: its family schema stops at both turn markers.
    assert default_stops(tiny_tokenizer) == ["<|im_end|>", "<|im_start|>"]
    assert cut_at_stop("Paris.<|im_end|>\n<|im_start|>user", default_stops(tiny_tokenizer)) == (
        "Paris."
    )
    assert cut_at_stop("no stop here", ["<|im_end|>"]) == "no stop here"


def test_importing_the_gate_and_generation_modules_stays_light() -> None:
    code = (
        "import sys, services.generation, services.training.gate, services.training.inference; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_no_repeat_ngram_keeps_a_looping_model_from_repeating_itself(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    import torch

    model, tokenizer = load_for_inference(tiny_model, cache_dir=tiny_model.parent / "cache")
    prompt = prompt_of(tiny_tokenizer, 1)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def written(**kwargs: Any) -> list[int]:
        out = model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=40, do_sample=False, **kwargs
        )
        return [int(t) for t in out[0, len(ids) :]]

    def repeats(tokens: list[int]) -> int:
        grams = [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
        return len(grams) - len(set(grams))

    assert repeats(written()) > 0  # left alone, the untrained model loops
    held_ids = written(logits_processor=_answer_ngram_blocker(3, len(ids)))
    assert len(held_ids) > 10 and repeats(held_ids) == 0
    held = generate(model, tokenizer, prompt, max_new_tokens=40, stop=[], no_repeat_ngram=3)
    free = generate(model, tokenizer, prompt, max_new_tokens=40, stop=[])
    assert held == tokenizer.decode(held_ids) != free
    # The CLI takes it too (what `personad ask` uses).
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(prompt)
    proc = run_cli(
        "--model",
        str(tiny_model),
        "--cache-dir",
        str(tiny_model.parent / "cache"),
        "--prompt-file",
        str(prompt_file),
        "--max-new-tokens",
        "40",
        "--no-repeat-ngram",
        "3",
    )
    assert proc.returncode == ExitCode.OK, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["text"] == cut_at_stop(held, default_stops(tokenizer))


def test_only_the_answers_own_ngrams_are_blocked_not_the_prompts() -> None:
    # A name the prompt showed (its memories) may be said again; the answer may not loop.
    assert banned_next_tokens([7, 8], 3) == set()  # "7 8 9" was in the prompt: still allowed
    assert banned_next_tokens([1, 2, 3, 1, 2], 3) == {3}
    assert banned_next_tokens([5, 5], 2) == {5}
    assert banned_next_tokens([], 3) == set()


def test_the_cli_takes_extra_stop_strings(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    model, tokenizer = load_for_inference(tiny_model, cache_dir=tiny_model.parent / "cache")
    prompt = prompt_of(tiny_tokenizer, 3)
    free = generate_answer(model, tokenizer, prompt, 16)
    assert not free.stopped and len(free.text) > 6
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(prompt)
    common = ["--model", str(tiny_model), "--cache-dir", str(tiny_model.parent / "cache")]
    common += ["--prompt-file", str(prompt_file), "--max-new-tokens", "16"]
    stop = free.text[4:6]
    proc = run_cli(*common, "--stop", "never said", "--stop", stop)
    assert proc.returncode == ExitCode.OK, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {"text": free.text[: free.text.index(stop)], "stopped": True}


def test_serve_loads_once_and_answers_json_lines_until_eof(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    cache = tiny_model.parent / "cache"
    model, tokenizer = load_for_inference(tiny_model, cache_dir=cache)
    first, second = prompt_of(tiny_tokenizer, 1), prompt_of(tiny_tokenizer, 2)
    want_first = generate_answer(model, tokenizer, first, 12, no_repeat_ngram=3)
    want_second = generate_answer(model, tokenizer, second, 8)
    stop = want_first.text[3:5]
    requests = [
        {"id": "a", "prompt": first, "max_new_tokens": 12, "no_repeat_ngram": 3},
        {"id": 2, "prompt": second},
        "not json",
        {"id": 3, "prompt": first, "max_new_tokens": 12, "no_repeat_ngram": 3, "stop": [stop]},
        {"id": 4, "prompt": 5},
        {"id": 5, "prompt": first, "max_new_tokens": -1},
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    argv = [sys.executable, "-m", "services.generation", "--serve", "--model", str(tiny_model)]
    argv += ["--cache-dir", str(cache), "--max-new-tokens", "8"]
    proc = subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        input="".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == ExitCode.OK, proc.stderr[-2000:]
    ready, *lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert ready["ready"] is True and ready["model"] == str(tiny_model)
    assert ready["adapter"] is None and ready["seconds"] >= 0
    assert len(lines) == len(requests)
    assert {k: lines[0][k] for k in ("id", "text", "stopped")} == {
        "id": "a",
        "text": want_first.text,
        "stopped": want_first.stopped,
    }
    assert lines[0]["seconds"] >= 0
    # Left out, max_new_tokens is the command line's.
    assert (lines[1]["id"], lines[1]["text"], lines[1]["stopped"]) == (2, *want_second)
    assert lines[2]["id"] is None and "not a JSON line" in lines[2]["error"]
    assert lines[3]["text"] == want_first.text[: want_first.text.index(stop)]
    assert lines[3]["stopped"] is True
    assert lines[4] == {"id": 4, "error": "'prompt' must be a string"}
    assert lines[5]["id"] == 5 and "max_new_tokens" in lines[5]["error"]


def test_serve_reports_a_model_it_cannot_load_and_exits(tmp_path: Path) -> None:
    proc = run_cli("--serve", "--model", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path))
    assert proc.returncode == ExitCode.BAD_INPUT
    ready = json.loads(proc.stdout)
    assert ready["ready"] is False and "no such file or directory" in ready["error"]


def test_the_cli_wants_a_prompt_file_or_serve(tmp_path: Path) -> None:
    proc = run_cli("--model", "m", "--cache-dir", str(tmp_path))
    assert proc.returncode == 2 and "--prompt-file" in proc.stderr
