"""How much of a trained LoRA adapter to keep: ``lora.scale``.

A small profile's LoRA on a small model learns its person's facts only when it trains
hard (a high learning rate; see ``services.training.config``), and a hard-trained adapter
also moves the model away from its base on everything else (the gate's general regression
set). Keeping a share ``s`` of the adapter (each ``lora_B`` times ``s``: the model between
its base, ``s = 0``, and the trained adapter, ``s = 1``) keeps most of what it learned of
the person and gives back most of the drift (bench/FIDELITY.md has the measurements).

``lora.scale``: a number in (0, 1] keeps that share; ``"auto"`` keeps the largest share of
:data:`GRID` whose drift from the base on general text stays within :data:`KL_BUDGET`:
the mean KL divergence, per answer token, of the base's next-token distribution from the
scaled model's, on the calibration set ``etc/eval/calibration.jsonl`` (24 conversations of
the same kinds as the gate's general regression set, none of its prompts: the gate judges
on a set the choice never saw). Drift measured this way is the same on both sets (within
0.13 nats at every share measured), where their losses are not.

The chosen share is written into the adapter's weights (``adapter_model.safetensors``),
so everything that loads the adapter (the gate, ``ask``, the merge, Ollama) serves the
same model; the choice goes into the ``done`` metrics and ``run-summary.json`` as
``adapter_scale``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from services import durable
from services.shipped import etc_dir
from services.training.gate.verdict import record_in_summary

log = structlog.get_logger(__name__)

CALIBRATION_SET = etc_dir() / "eval" / "calibration.jsonl"
# Shares tried, largest first; "auto" keeps the first within the budget (found by bisection).
GRID = tuple(round(1.0 - 0.05 * i, 2) for i in range(15))  # 1.0 .. 0.3
# Nats per answer token. On SmolLM2-135M, Maren's adapter trained at 3e-3: KL 1.69 left the
# general regression loss where the base had it, 2.05 raised it 6% (bench/FIDELITY.md).
KL_BUDGET = 1.5
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class _Scaler:
    """The ``lora_B`` weights of a peft model, set to a share of what they were trained to."""

    def __init__(self, model: Any) -> None:
        self.pairs = [(p, p.detach().clone()) for n, p in model.named_parameters() if "lora_B" in n]

    def set(self, share: float) -> None:
        import torch

        with torch.no_grad():
            for param, trained in self.pairs:
                param.copy_(trained * share)


def encoded_answers(
    samples: Sequence[Any], tokenizer: Any, device: Any, max_len: int
) -> list[tuple[Any, int]]:
    """(input ids, prompt length) of each sample with an answer, tokenized (and cut to
    ``max_len``) as training tokenizes its samples."""
    import torch

    from services.training.batching import encode
    from services.training.dataset_reader import Record

    records = [Record(s.id, s.prompt, s.completion, s.weight, "eval") for s in samples]
    examples, _ = encode(records, tokenizer, max_len)
    return [
        (torch.tensor([ex.input_ids], device=device), ex.n_prompt)
        for ex in examples
        if len(ex.input_ids) > ex.n_prompt
    ]


def answer_log_softmax(model: Any, ids: Any, start: int) -> Any:
    """The model's next-token log-probabilities where each answer token of ``ids`` (its
    prompt being the first ``start``) is predicted; logits only there, not over the prompt."""
    import torch

    keep = ids.shape[1] - start + 1
    logits = model(input_ids=ids, logits_to_keep=keep, use_cache=False).logits[0, :-1]
    return torch.log_softmax(logits.float(), -1)


def answer_logprobs(model: Any, encoded: list[tuple[Any, int]]) -> list[Any]:
    import torch

    with torch.no_grad():
        return [answer_log_softmax(model, ids, start) for ids, start in encoded]


def kl_sum(lp: Any, lq: Any) -> Any:
    """KL(p || q) summed over the positions, from their log-probabilities ``lp``, ``lq``."""
    return (lp.exp() * (lp - lq)).sum()


def drift(model: Any, encoded: list[tuple[Any, int]], base: list[Any]) -> float:
    """Mean KL(base || model) per answer token, ``base`` being the base's log-probs."""
    total = tokens = 0.0
    for lp, lq in zip(base, answer_logprobs(model, encoded), strict=True):
        total += float(kl_sum(lp, lq))
        tokens += lp.shape[0]
    return total / tokens if tokens else 0.0


def choose_scale(
    model: Any,
    tokenizer: Any,
    samples: Sequence[Any],
    *,
    budget: float = KL_BUDGET,
    grid: Sequence[float] = GRID,
    max_len: int = 2048,
) -> dict[str, Any]:
    """The largest share of ``grid`` whose drift is within ``budget`` (the smallest when
    none is), assuming drift grows with the share; the model is left as trained.
    Returns ``{"scale", "drift", "budget", "within", "tried": [{"scale", "drift"}]}``."""
    scaler = _Scaler(model)
    if not scaler.pairs:
        raise ValueError("the model has no LoRA weights to scale")
    device = scaler.pairs[0][0].device
    encoded = encoded_answers(samples, tokenizer, device, max_len)
    was_training = model.training
    model.eval()
    try:
        scaler.set(0.0)
        base = answer_logprobs(model, encoded)
        tried: dict[float, float] = {}

        def within(i: int) -> bool:
            scaler.set(grid[i])
            tried[grid[i]] = drift(model, encoded, base)
            return tried[grid[i]] <= budget

        lo, hi = 0, len(grid) - 1  # the first share within the budget is in [lo, hi]
        if within(lo):
            hi = lo
        else:
            lo += 1
            while lo < hi:
                mid = (lo + hi) // 2
                if within(mid):
                    hi = mid
                else:
                    lo = mid + 1
            if grid[hi] not in tried:
                within(hi)
    finally:
        scaler.set(1.0)
        model.train(was_training)
    chosen = grid[hi]
    return {
        "scale": chosen,
        "drift": tried[chosen],
        "budget": budget,
        "within": tried[chosen] <= budget,
        "tried": [{"scale": s, "drift": round(d, 4)} for s, d in sorted(tried.items())],
    }


def rescale_adapter(adapter_dir: Path, share: float) -> None:
    """Multiply the saved adapter's ``lora_B`` weights by ``share``, in place (atomically)."""
    from safetensors.torch import load_file, save

    path = adapter_dir / ADAPTER_WEIGHTS
    tensors = load_file(str(path))
    scaled = {k: (v * share if "lora_B" in k else v).contiguous() for k, v in tensors.items()}
    durable.write_bytes(path, save(scaled, metadata={"format": "pt"}))


def scale_adapter(
    adapter_dir: Path,
    base_dir: Path,
    setting: float | str,
    run_dir: Path,
    device: str = "cpu",
    max_len: int = 2048,
) -> dict[str, Any]:
    """Apply ``lora.scale`` to the adapter written from the base model in ``base_dir``: a
    number as it is, ``"auto"`` as chosen on the calibration set in the run's chat format
    (:func:`choose_scale`; its samples cut to ``max_len`` tokens, the run's
    ``max_seq_length``). Returns the choice (``{"scale": ...}`` for a number), with the
    seconds it took, also written under ``run-summary.json``'s ``"adapter_scale"``."""
    started = time.perf_counter()
    choice: dict[str, Any]
    if setting == "auto":
        from services.training.gate.sets import chat_renderer, read_eval_set
        from services.training.inference import load_for_inference

        model, tokenizer = load_for_inference(
            base_dir, adapter=adapter_dir, cache_dir=base_dir.parent, device=device
        )
        render = chat_renderer(run_dir, tokenizer)
        if render is None:
            choice = {"scale": 1.0, "skipped": "no chat format to render the calibration set in"}
        else:
            samples = read_eval_set(CALIBRATION_SET, render)
            choice = choose_scale(model, tokenizer, samples, max_len=max_len)
        del model
    else:
        choice = {"scale": float(setting)}
    if choice["scale"] != 1.0:
        rescale_adapter(adapter_dir, choice["scale"])
    choice["seconds"] = round(time.perf_counter() - started, 2)
    log.info("adapter scaled", adapter=str(adapter_dir), **choice)
    record_in_summary(run_dir, "adapter_scale", choice)
    return choice
