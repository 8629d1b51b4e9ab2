"""The evaluation gate's tag probe: does the candidate write another mode's tags?

For each mode, up to ``gate.probe_per_mode`` samples' prompts are continued greedily for
``gate.probe_tokens`` tokens; an output holding the tags of another mode (``etc/curation.json``)
fails the gate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from services.training.gate.sets import EvalSample


def tag_table() -> dict[str, tuple[str, str]]:
    """Mode -> (prompt tag, response tag) (``services.curation.modes.mode_tags``)."""
    from services.curation.modes import mode_tags

    return mode_tags()


def foreign_tags(text: str, mode: str, table: Mapping[str, tuple[str, str]]) -> list[str]:
    """The tags of modes other than ``mode`` in ``text`` (opening or closing, any case,
    inner spaces allowed), each once as ``<tag>``, in table order; [] when clean."""
    foreign = [tag for other, tags in table.items() if other != mode for tag in tags]
    if not foreign:
        return []
    alternatives = "|".join(re.escape(t) for t in foreign)
    found = {
        m.group(1).lower()
        for m in re.finditer(rf"<\s*/?\s*({alternatives})\s*>", text, re.IGNORECASE)
    }
    return [f"<{t}>" for t in foreign if t.lower() in found]


def probe_samples(samples: Sequence[EvalSample], per_mode: int) -> list[EvalSample]:
    """Up to ``per_mode`` samples with a prompt for each mode, in order of appearance."""
    taken: dict[str, int] = {}
    out: list[EvalSample] = []
    for s in samples:
        if s.mode is None or not s.prompt or taken.get(s.mode, 0) >= per_mode:
            continue
        taken[s.mode] = taken.get(s.mode, 0) + 1
        out.append(s)
    return out


def run_probe(
    model: Any,
    tokenizer: Any,
    samples: Sequence[EvalSample],
    max_new_tokens: int,
    table: Mapping[str, tuple[str, str]],
) -> dict[str, Any]:
    """Greedy continuations of the samples' prompts, and the other modes' tags in each."""
    from services.training.inference import generate

    outputs: list[dict[str, Any]] = []
    for s in samples:
        if s.mode is None or s.mode not in table:
            continue
        text = generate(model, tokenizer, s.prompt, max_new_tokens=max_new_tokens)
        tags = foreign_tags(text, s.mode, table)
        outputs.append({"id": s.id, "mode": s.mode, "output": text, "foreign": tags})
    foreign = [{"id": o["id"], "mode": o["mode"], "tags": o["foreign"]} for o in outputs]
    foreign = [f for f in foreign if f["tags"]]
    return {
        "passed": not foreign,
        "checked": len(outputs),
        "foreign": foreign,
        "outputs": outputs,
    }
