"""Persona fidelity in the gate: does the model know the person and sound like them?

The daemon writes ``fidelity_probes.jsonl`` into the run directory (one line per probe:
``{"id", "profile", "question", "reference", "source", "memories": [...]}``, and
``"facts"`` when the person wrote their reference in their own voice): the
profile's own held-out questions (``<profiles>/<profile>/probes.jsonl``) first, then
held-out emulation samples of the run, each with the memories ``ask`` retrieves for its
question (its own memory left out: a held-out answer must not be read off the prompt).

Each model answers every probe as ``ask`` would have it answer (the prompt policy of
:mod:`services.persona_prompt`, rendered in the run's chat format, greedy, stopping at the
emulation closing tag or eos), once **without** retrieval and once **with** the probe's
memories. Its answers are scored (:mod:`services.fidelity`):

- ``recall``: the mean share of each reference answer's key terms the answer holds (the
  key terms of the probe's ``facts`` when it has them: a reference in the person's voice
  holds their turns of phrase too, which are style, not facts);
- ``transfer``: the share of probes where its answer is closer in style to the person's
  reference than the base model's answer is (against the base when the base is the
  reference, else against the reference model, said by ``transfer_against``);
- ``hygiene``: answers that stopped by themselves, answers with stray tags, length ratio.

The check: the candidate's recall, without and with retrieval, may fall at most
``gate.fidelity_tolerance`` below the reference's, and it may not write stray tags in more
answers than the reference does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from services.fidelity import hygiene, key_terms, mean_recall, recall, transfer_score
from services.fidelity.hygiene import typical_length
from services.fidelity.judge import JudgeConfig, judge_answers
from services.jsonl import read_objects
from services.persona_prompt import ask_messages, emulation_tags
from services.training.errors import BadInputError

log = structlog.get_logger(__name__)

PROBES_FILE = "fidelity_probes.jsonl"
SETTINGS = ("without_retrieval", "with_retrieval")

Prompt = Callable[[list[dict[str, str]]], str]
Generate = Callable[[list[str]], list[tuple[str, bool]]]  # prompts -> [(answer, stopped)]


@dataclass(frozen=True)
class FidelityProbe:
    id: str
    profile: str
    question: str
    reference: str
    source: str  # "probes" (the profile's own) or "held-out"
    memories: tuple[str, ...] = ()
    facts: str = ""  # the words that carry the facts; "" = the whole reference
    system: str = ""  # the head of the system message the model answers under; "" = default

    @property
    def terms(self) -> list[str]:
        """The key terms fact recall looks for in an answer."""
        return key_terms(self.facts or self.reference, self.question)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "profile": self.profile,
            "question": self.question,
            "reference": self.reference,
            "source": self.source,
            "memories": list(self.memories),
            **({"facts": self.facts} if self.facts else {}),
            **({"system": self.system} if self.system else {}),
        }


def read_probes(path: Path) -> list[FidelityProbe]:
    """The probes of a ``fidelity_probes.jsonl``; [] when there is none."""
    if not path.is_file():
        return []
    out = []
    for where, obj in read_objects(path, what="fidelity probes", error=BadInputError):
        fields = [obj.get(k) for k in ("profile", "question", "reference")]
        memories = obj.get("memories", [])
        facts, system = obj.get("facts", ""), obj.get("system", "")
        if (
            not all(isinstance(f, str) and f.strip() for f in fields)
            or not (isinstance(memories, list) and all(isinstance(m, str) for m in memories))
            or not (isinstance(facts, str) and isinstance(system, str))
        ):
            raise BadInputError(
                f"{where}: needs 'profile', 'question' and 'reference' (non-empty strings), "
                "'memories' (a list of strings) and, if any, 'facts' and 'system' (strings)"
            )
        profile, question, reference = (str(f) for f in fields)
        out.append(
            FidelityProbe(
                str(obj.get("id", where)),
                profile,
                question,
                reference,
                str(obj.get("source", "held-out")),
                tuple(memories),
                facts,
                system,
            )
        )
    return out


@dataclass(frozen=True)
class Answers:
    """One model's answers to the probes in one setting."""

    texts: list[str]
    stopped: list[bool]


def answer_both(
    probes: Sequence[FidelityProbe], prompt: Prompt, generate: Generate
) -> dict[str, Answers]:
    """Answers without and with retrieval (all prompts in one ``generate`` call, which may
    batch them)."""
    prompts = [
        prompt(ask_messages(p.profile, p.question, memories, p.system or None))
        for setting in SETTINGS
        for p in probes
        for memories in [p.memories if setting == "with_retrieval" else ()]
    ]
    answered = generate(prompts)
    if len(answered) != len(prompts):
        raise ValueError(f"{len(answered)} answers to {len(prompts)} prompts")
    out = {}
    for k, setting in enumerate(SETTINGS):
        part = answered[k * len(probes) : (k + 1) * len(probes)]
        out[setting] = Answers([text for text, _ in part], [done for _, done in part])
    return out


def scores(
    probes: Sequence[FidelityProbe],
    answers: Mapping[str, Answers],
    against: Mapping[str, Answers] | None,
) -> dict[str, Any]:
    """Recall, hygiene and (with ``against``: the answers style is compared with) the
    transfer score of one model, per setting."""
    references = [p.reference for p in probes]
    typical = typical_length(references)
    out: dict[str, Any] = {}
    for setting, a in answers.items():
        rec = mean_recall([recall(text, p.terms) for text, p in zip(a.texts, probes, strict=True)])
        h = hygiene(a.texts, a.stopped, [emulation_tags()] * len(a.texts), typical)
        other = against.get(setting) if against is not None else None
        out[setting] = {
            "recall": rec.to_dict(),
            "hygiene": h.to_dict(),
            "transfer": None if other is None else transfer_score(references, a.texts, other.texts),
        }
    return out


def check(
    candidate: Mapping[str, Any], reference: Mapping[str, Any], tolerance: float
) -> dict[str, Any]:
    """The fidelity check (see the module docstring): ``{"passed", "summary", ...}``."""
    failures: list[str] = []
    parts: list[str] = []
    for setting in SETTINGS:
        c = candidate[setting]["recall"]["mean"]
        r = reference[setting]["recall"]["mean"]
        if c is None or r is None:
            continue
        label = setting.replace("_", " ")
        line = f"fact recall {label} {c:.0%} (reference {r:.0%}, tolerance {tolerance:.0%})"
        (failures if c < r - tolerance - 1e-9 else parts).append(line)
    stray_c = max(candidate[s]["hygiene"]["with_stray_tags"] for s in SETTINGS)
    stray_r = max(reference[s]["hygiene"]["with_stray_tags"] for s in SETTINGS)
    if stray_c > stray_r:
        failures.append(f"stray tags in {stray_c} answers (reference {stray_r})")
    return {
        "passed": not failures,
        "summary": "; ".join(failures or parts) or "no probe could be scored",
        "failures": failures,
        "tolerance": tolerance,
    }


def outputs(
    probes: Sequence[FidelityProbe], answers: Mapping[str, Mapping[str, Answers]]
) -> list[dict[str, Any]]:
    """Every answer, for ``eval.json``: per probe, ``answers[model][setting]``."""
    return [
        {
            "id": p.id,
            "question": p.question,
            "reference": p.reference,
            **({"facts": p.facts} if p.facts else {}),
            "answers": {
                model: {s: by_setting[s].texts[i] for s in by_setting}
                for model, by_setting in answers.items()
            },
        }
        for i, p in enumerate(probes)
    ]


def judge_fidelity(
    config: JudgeConfig,
    probes: Sequence[FidelityProbe],
    answers: Mapping[str, Mapping[str, Answers]],
    against: str,
) -> dict[str, Any]:
    """The LLM judge's record of the ``"reference"`` and ``"candidate"`` answers
    (:mod:`services.fidelity.judge`): kept apart from the check, never raises."""
    texts = {model: {s: a.texts for s, a in by.items()} for model, by in answers.items()}
    return judge_answers(config, probes, texts, against=against)
