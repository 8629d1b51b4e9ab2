"""Fact recall of one trained run under variants of the serving prompt, per probe.

    .venv/bin/python bench/fidelity_prompts.py RUN_DIR [--variant NAME ...] [--tokens 48]
        [--retrieval with|without|both]

RUN_DIR is a finished LoRA run (``<state>/runs/<profile>/<date>/lora-job<N>-<time>/``, as
``personad demo`` leaves it: ``adapter/``, ``fidelity_probes.jsonl``, ``persona.json``,
``schema_applied.json``; the base model is the one converted under ``<state>/base-models``).
Its adapter answers the run's probes as the gate asks them (the prompt policy, the run's
chat format, greedy, ``gate.fidelity_tokens`` new tokens, the closing tag and n-gram
blocking of ``ask``), once per variant, without retrieving anything new: it tells what a
change of the prompt would cost or bring before a training run is spent on it. Variants:

- ``trained``: the head the run was trained with and the probe's memories (what the gate
  measured);
- ``no-length``: that head without its "Your answers are usually about N words long.";
- ``no-topics``: that head without its "You often talk about ...";
- ``default``: the default head ("You are P. Answer as P, in your own words.");
- ``reversed``: the memories best last (nearest the question);
- ``k2`` / ``k1``: only the 2 (1) closest memories.

A variant of the head changes what the model was trained with: it measures the head's
weight, not a policy to serve as is (the training prompt and the serving prompt are one).
Prints each answer with its recall and each variant's mean (the gate's figure).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.fidelity import recall  # noqa: E402
from services.persona_prompt import NO_REPEAT_NGRAM, answer_stops, ask_messages  # noqa: E402
from services.training.gate.fidelity import FidelityProbe, read_probes  # noqa: E402

Variant = Callable[[FidelityProbe, str | None], tuple[str | None, list[str]]]


def _drop(pattern: str) -> Callable[[str | None], str | None]:
    return lambda head: re.sub(pattern, "", head) if head else head


_NO_LENGTH = _drop(r" Your answers are usually about \d+ words long\.")
_NO_TOPICS = _drop(r" You often talk about [^.]*\.")
VARIANTS: dict[str, Variant] = {
    "trained": lambda p, head: (head, list(p.memories)),
    "no-length": lambda p, head: (_NO_LENGTH(head), list(p.memories)),
    "no-topics": lambda p, head: (_NO_TOPICS(head), list(p.memories)),
    "default": lambda p, head: (None, list(p.memories)),
    "reversed": lambda p, head: (head, list(p.memories)[::-1]),
    "k2": lambda p, head: (head, list(p.memories)[:2]),
    "k1": lambda p, head: (head, list(p.memories)[:1]),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    p.add_argument("--tokens", type=int, help="new tokens per answer (default: the run's)")
    p.add_argument("--retrieval", choices=("with", "without", "both"), default="with")
    args = p.parse_args()
    run: Path = args.run_dir
    from services.training.gate.sets import prompt_renderer
    from services.training.inference import default_stops, generate_answer, load_for_inference

    config = json.loads((run / "config.json").read_text())["config"]
    gate = config.get("gate") or {}
    tokens = args.tokens or int(gate.get("fidelity_tokens", 48))
    probes = read_probes(run / "fidelity_probes.jsonl")[: int(gate.get("fidelity_probes", 12))]
    state = run.parents[3]
    base = next(iter(sorted((state / "base-models").iterdir())))
    model, tokenizer = load_for_inference(
        str(base), adapter=run / "adapter", cache_dir=state / "base-models"
    )
    render = prompt_renderer(run, tokenizer)
    if render is None:
        print(f"{run}: no chat format recorded", file=sys.stderr)
        return 2
    stops = [*default_stops(tokenizer), *answer_stops()]
    settings = {"with": (True,), "without": (False,), "both": (False, True)}[args.retrieval]
    summary = []
    for name in args.variant or ["trained", "no-length", "default", "reversed", "k2"]:
        for retrieval in settings:
            started, values = time.monotonic(), []
            print(f"== {name}, {'with' if retrieval else 'without'} retrieval")
            for probe in probes:
                head, memories = VARIANTS[name](probe, probe.system or None)
                messages = ask_messages(
                    probe.profile, probe.question, memories if retrieval else [], head
                )
                out = generate_answer(
                    model, tokenizer, render(messages), tokens, 0.0, stops, NO_REPEAT_NGRAM
                )
                value = recall(out.text, probe.terms)
                values.append(value)
                shown = "-" if value is None else f"{value:.2f}"
                print(f"  {shown:>4}  {probe.question[:40]:40s}  {out.text[:90]!r}")
            scored = [v for v in values if v is not None]
            mean = sum(scored) / len(scored) if scored else float("nan")
            seconds = time.monotonic() - started
            summary.append((name, retrieval, mean))
            print(f"  recall {mean:.1%} ({seconds:.0f} s)", flush=True)
    print("\nvariant            retrieval  recall")
    for name, retrieval, mean in summary:
        print(f"{name:18s} {'with' if retrieval else 'without':9s}  {mean:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
