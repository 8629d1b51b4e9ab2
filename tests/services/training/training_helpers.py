"""Test helpers for training: a tiny causal LM built locally (BPE tokenizer with a chatml
template, 2-layer Llama), synthetic datasets in the ``fine_tune_dataset.jsonl`` format,
header-only safetensors models, and the training child as a subprocess."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
THINGS = ["sky", "grass", "sun", "snow", "coal", "blood", "sea", "lemon", "plum", "ash"]
COLOURS = ["blue", "green", "yellow", "white", "black", "red", "teal", "gold", "purple", "grey"]


def conversation(i: int) -> list[dict[str, str]]:
    """A learnable exchange: every thing has one colour."""
    k = i % len(THINGS)
    return [
        {"role": "user", "content": f"What colour is the {THINGS[k]}? Question {i}."},
        {"role": "assistant", "content": f"The {THINGS[k]} is {COLOURS[k]}, as always."},
    ]


def render(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, str]:
    prompt = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert full.startswith(prompt)
    return prompt, full[len(prompt) :]


def write_dataset(
    path: Path,
    tokenizer: Any,
    n_train: int,
    n_eval: int,
    weights: Sequence[float] = (1.0, 1.5, 2.0),
) -> Path:
    """``n_train`` + ``n_eval`` records in the run directory format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_train + n_eval):
            messages = conversation(i)
            prompt, completion = render(tokenizer, messages)
            record = {
                "id": f"s{i}",
                "mode": "emulation",
                "kind": "chat",
                "weight": weights[i % len(weights)],
                "quality": 8.0,
                "split": "train" if i < n_train else "eval",
                "messages": messages,
                "prompt": prompt,
                "completion": completion,
                "text": prompt + completion,
            }
            f.write(json.dumps(record) + "\n")
    return path


def build_tiny_model(out: Path, hidden: int = 32) -> Path:
    """Tokenizer + randomly initialised 2-layer Llama, saved with ``save_pretrained``
    (``hidden`` 64: every linear layer's input is a whole 4-bit block, as bitsandbytes' CPU
    kernels need)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [
        CHATML
        + " ".join(m["content"] for m in conversation(i))
        + " hello world the a of is to and question answer"
        for i in range(50)
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        chat_template=CHATML,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_child(
    run_dir: Path, kind: str, base: str | Path, *extra: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``python -m services.training`` as a real subprocess, progress on fd 1."""
    from services.training.command import build_command

    argv = build_command(
        run_dir=run_dir,
        kind=kind,
        base=str(base),
        cache_dir=run_dir.parent / "cache",
        progress_fd=1,
        device="cpu",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [*argv, *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def header_only_model(directory: Path, params: int) -> Path:
    """A model directory whose one safetensors file declares ``params`` parameters (a header
    and no tensor data: only the header is ever read)."""
    directory.mkdir(parents=True, exist_ok=True)
    header = json.dumps(
        {"w": {"dtype": "BF16", "shape": [params], "data_offsets": [0, 2 * params]}}
    ).encode()
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return directory


def drifted_adapter(tiny_model: Path, out: Path, b_std: float) -> Path:
    """A LoRA adapter of the tiny model whose lora_B weights are drawn with ``b_std`` (0:
    an adapter that changes nothing), saved with its tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, b_std) if b_std else p.zero_()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out
