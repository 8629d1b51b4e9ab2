"""Tokenization, label masking, batching, packing and the weighted token loss."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from services.training.batching import (
    IGNORE,
    Example,
    collate,
    collate_packed,
    encode,
    packed_rows,
    plan_steps,
    split_step,
)
from services.training.checkpoints import Checkpoints
from services.training.config_model import TrainingConfig
from services.training.dataset_reader import Record
from services.training.loss import TokenLoss, packing_works
from services.training.plan import lr_lambda, warmup_steps
from tests.services.training.training_helpers import conversation, render


def records(tokenizer: Any, n: int, weight: float = 1.0) -> list[Record]:
    out = []
    for i in range(n):
        prompt, completion = render(tokenizer, conversation(i))
        out.append(Record(f"s{i}", prompt, completion, weight, "train"))
    return out


@pytest.fixture(scope="module")
def tiny_lm(tiny_model: Path) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


def test_labels_are_masked_exactly_on_prompt_positions(tiny_tokenizer: Any) -> None:
    recs = records(tiny_tokenizer, 3)
    examples, truncated = encode(recs, tiny_tokenizer, 512)
    assert truncated == 0
    batch = collate(examples, pad_id=tiny_tokenizer.pad_token_id)
    for row, (rec, ex) in enumerate(zip(recs, examples, strict=True)):
        n_prompt = len(tiny_tokenizer(rec.prompt, add_special_tokens=False)["input_ids"])
        assert ex.n_prompt == n_prompt
        labels = batch.labels[row].tolist()
        ids = batch.input_ids[row].tolist()
        assert labels[:n_prompt] == [IGNORE] * n_prompt
        assert labels[n_prompt : len(ex)] == ids[n_prompt : len(ex)]
        assert labels[len(ex) :] == [IGNORE] * (len(labels) - len(ex))
        assert tiny_tokenizer.decode(ids[n_prompt : len(ex)]) == rec.completion
        weights = batch.weights[row].tolist()
        assert [w != 0 for w in weights] == [lab != IGNORE for lab in labels]


def test_truncation_keeps_the_prompt_end_and_the_completion_start() -> None:
    class Chars:
        def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
            return {"input_ids": [ord(c) for c in text]}

    long = Record("x", "P" * 40 + "<gen>", "C" * 50 + "<end>", 1.0, "train")
    (ex,), truncated = encode([long], Chars(), 64)
    assert truncated == 1 and len(ex) == 64
    text = "".join(map(chr, ex.input_ids))
    assert text.startswith("P") and text[: ex.n_prompt].endswith("<gen>")
    assert ex.n_prompt == 32 and text[ex.n_prompt :] == "C" * 32


def test_steps_take_random_samples_and_split_them_longest_first() -> None:
    lengths = [random.Random(i).randint(20, 600) for i in range(100)]
    steps = plan_steps(100, 16, random.Random(1))
    assert [len(s) for s in steps] == [16] * 6 + [4]
    assert sorted(i for s in steps for i in s) == list(range(100))
    assert steps != plan_steps(100, 16, random.Random(2))  # a new order every epoch

    micro = split_step(steps[0], lengths, 1200)
    assert sorted(i for m in micro for i in m) == sorted(steps[0])
    flat = [i for m in micro for i in m]
    assert [lengths[i] for i in flat] == sorted((lengths[i] for i in flat), reverse=True)
    for m in micro:  # within the budget, unless one sample alone is longer
        assert len(m) * lengths[m[0]] <= 1200 or len(m) == 1

    def padding(groups: list[list[int]]) -> float:
        slots = sum(max(lengths[i] for i in g) * len(g) for g in groups)
        return 1 - sum(lengths[i] for g in groups for i in g) / slots

    assert padding(micro) < 0.1 < 0.25 < padding([steps[0]])
    assert split_step(steps[0], lengths, 1) == [[i] for i in flat]  # one sample per pass


def test_packed_rows_fit_and_positions_restart() -> None:
    lengths = [random.Random(i).randint(5, 60) for i in range(50)]
    rows = packed_rows(lengths, 128)
    assert sorted(i for r in rows for i in r) == list(range(50))
    assert all(sum(lengths[i] for i in r) <= 128 for r in rows)
    assert len(rows) <= -(-sum(lengths) // 128) + 1  # first fit, longest first: near optimal
    examples = [Example(list(range(1, n + 1)), 2, 1.0) for n in lengths]
    batch = collate_packed([[examples[i] for i in rows[0]]], pad_id=0)
    assert batch.position_ids is not None
    starts = [0]
    for i in rows[0][:-1]:
        starts.append(starts[-1] + lengths[i])
    pos = batch.position_ids[0].tolist()
    assert [pos[s] for s in starts] == [0] * len(starts)
    assert all(batch.labels[0, s] == IGNORE for s in starts)


def test_packed_samples_stay_apart_in_a_model_that_supports_it(
    tiny_lm: Any, tiny_tokenizer: Any
) -> None:
    examples, _ = encode(records(tiny_tokenizer, 4), tiny_tokenizer, 512)
    assert packing_works(TokenLoss(tiny_lm, tiny_lm), examples, torch.device("cpu"))


def test_sample_weights_scale_the_loss_and_its_gradient(tiny_lm: Any, tiny_tokenizer: Any) -> None:
    loss_fn = TokenLoss(tiny_lm, tiny_lm)
    (a, b), _ = encode(records(tiny_tokenizer, 2), tiny_tokenizer, 512)

    def objective(weight_a: float) -> tuple[float, torch.Tensor]:
        tiny_lm.zero_grad()
        batch = collate([Example(a.input_ids, a.n_prompt, weight_a), b], pad_id=0)
        losses, weights = loss_fn(batch)
        value = (losses * weights).sum() / batch.n_targets
        value.backward()
        grad = tiny_lm.get_output_embeddings().weight.grad.clone()
        return float(value.detach()), grad

    zero, grad_zero = objective(1e-9)
    one, grad_one = objective(1.0)
    two, grad_two = objective(2.0)
    # Linear in a's weight: each unit of weight adds a's loss share (and its gradient) once more.
    assert two - one > 0.1
    assert two - one == pytest.approx(one - zero, rel=1e-4)
    assert torch.allclose(grad_two - grad_one, grad_one - grad_zero, atol=1e-6)
    assert not torch.allclose(grad_two, grad_one, atol=1e-4)


def test_right_padding_without_a_mask_gives_each_samples_own_loss(
    tiny_lm: Any, tiny_tokenizer: Any
) -> None:
    recs = [records(tiny_tokenizer, 1)[0]]
    for i in (7, 1234567):
        prompt, completion = render(tiny_tokenizer, conversation(i))
        recs.append(Record(str(i), prompt, completion * (1 + i % 3), 1.0, "train"))
    examples, _ = encode(recs, tiny_tokenizer, 512)
    batch = collate(examples, pad_id=tiny_tokenizer.pad_token_id)
    assert batch.n_tokens < batch.n_slots  # there is padding
    with torch.no_grad():
        losses, _ = TokenLoss(tiny_lm, tiny_lm)(batch)
        alone = []
        for ex in examples:
            ids = torch.tensor([ex.input_ids])
            logits = tiny_lm(input_ids=ids).logits[0, :-1]
            keep = torch.arange(1, len(ex)) >= ex.n_prompt
            alone.append(F.cross_entropy(logits[keep], ids[0, 1:][keep], reduction="none"))
    assert losses.shape == (batch.n_targets,)
    assert torch.allclose(losses, torch.cat(alone), atol=1e-5)


def test_learning_rate_schedules() -> None:
    cosine = lr_lambda("cosine", 2, 10)
    assert [round(cosine(s), 3) for s in (0, 1)] == [0.333, 0.667]
    assert cosine(2) == 1.0 and cosine(6) == pytest.approx(0.5) and cosine(10) == pytest.approx(0)
    linear = lr_lambda("linear", 0, 4)
    assert [linear(s) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_lambda("constant", 0, 4)(3) == 1.0


def test_warmup_steps_replace_the_ratio_and_leave_a_short_run_its_rate() -> None:
    ratio = TrainingConfig(warmup_ratio=0.05)
    steps = TrainingConfig(warmup_ratio=0.05, warmup_steps=150)
    assert warmup_steps(ratio, 1000) == 50
    assert warmup_steps(steps, 3000) == 150  # a long run: the mode's 150 steps
    assert warmup_steps(steps, 400) == 40  # at most a tenth of the run
    assert warmup_steps(steps, 9) == 0


def test_checkpoint_limit_keeps_the_best(tiny_lm: Any, tmp_path: Path) -> None:
    ckpts = Checkpoints(tmp_path / "checkpoints", limit=2)
    for step, loss in [(1, 1.0), (2, 3.0), (3, 2.0), (4, 4.0)]:
        ckpts.save(tiny_lm, step, loss)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-1", "step-4"]
    best = ckpts.best()
    assert best is not None and best[0] == 1
    assert (tmp_path / "checkpoints" / "step-1" / "model.safetensors").is_file()
