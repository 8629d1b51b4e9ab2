"""An optional LLM judge of persona fidelity, through Ollama (``eval.judge_model``).

Besides the scores computed here without a model (recall, style, hygiene), a larger model
served by Ollama can be asked, for every probe and setting (without and with retrieval):

- **persona match**: a score from 1 to 10 for the reference model's answer and for the
  candidate's, given the person's memories, the question and the person's own answer;
- **pairwise**: which of the two answers is more like the person's, asked twice with the
  answers' positions swapped (reference as A, then candidate as A). A preference counts
  only when both orders agree; otherwise the probe is a tie (and counted as
  ``disagreed``), which cancels a judge's bias for the first or the second position.

The judge never decides anything: its record is kept apart from the verdict. A reply that
cannot be read is counted as ``unparsable``; a server that cannot be reached, answers an
error or lacks the model ends the judging with ``{"error": ...}`` (after the first such
request: nothing is retried), and no exception leaves :func:`judge_answers`.

The record (``eval.json``'s ``fidelity_judge``, ``fidelity.json``'s ``fidelity_judge``)::

    {"model", "host", "against": "base" | "active" | null, "error": str | null,
     "requests": int, "seconds": float,
     "settings": {"without_retrieval" | "with_retrieval": {
         "match": {"reference" | "candidate": {"mean": float | null, "scored", "unparsable"}},
         "pairwise": {"candidate", "reference", "tie", "disagreed", "unparsable",
                      "candidate_share": float | null}}},
     "probes": [{"id", SETTING: {"match": {"reference", "candidate": int | null},
                 "pairwise": {"reference_first", "candidate_first": "A" | "B" | "tie" | null,
                              "winner": "reference" | "candidate" | "tie" | null}}}],
     "unparsable_replies": [str]}

(``settings``, ``probes`` and ``unparsable_replies`` are absent when ``error`` is set.)
``candidate_share`` is (candidate wins + ties / 2) / judged pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from services.fidelity import judge_prompts as prompts

log = structlog.get_logger(__name__)

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_TIMEOUT_S = 120.0
SETTINGS = ("without_retrieval", "with_retrieval")
MODELS = ("reference", "candidate")
NUM_PREDICT = 48  # a JSON object of one short field
KEPT_REPLIES = 5  # unparsable replies kept in the record, for a person to see why
OPTIONS = {"temperature": 0.0, "seed": 0, "num_predict": NUM_PREDICT}
_SCORE = prompts.parse_score
_PREFERENCE = prompts.parse_preference


@dataclass(frozen=True)
class JudgeConfig:
    """The judge model and the Ollama server that serves it."""

    model: str
    host: str = DEFAULT_HOST
    timeout_s: float = DEFAULT_TIMEOUT_S


def judge_config(model: str | None, host: str | None, timeout_s: float) -> JudgeConfig | None:
    """The judge of the settings ``eval.judge_model`` (None or empty: no judge),
    ``ollama.url`` (None: Ollama's default address) and ``eval.judge_timeout_s``."""
    model = (model or "").strip()
    return JudgeConfig(model, host or DEFAULT_HOST, timeout_s) if model else None


class Probe(Protocol):
    """What the judge reads of a fidelity probe."""

    @property
    def id(self) -> str: ...
    @property
    def profile(self) -> str: ...
    @property
    def question(self) -> str: ...
    @property
    def reference(self) -> str: ...
    @property
    def memories(self) -> Sequence[str]: ...


class JudgeUnavailable(Exception):
    """The server cannot be asked: unreachable, erroring, or without the model."""


class _Asker:
    """One Ollama client asking the judge model, counting its requests."""

    def __init__(self, config: JudgeConfig) -> None:
        import ollama

        self.config = config
        self.requests = 0
        self.client = ollama.Client(host=config.host, timeout=config.timeout_s)

    def ask(self, prompt: str) -> str:
        import httpx
        import ollama

        c = self.config
        self.requests += 1
        try:
            reply = self.client.chat(
                model=c.model,
                messages=[
                    {"role": "system", "content": prompts.SYSTEM},
                    {"role": "user", "content": prompt},
                ],
                format="json",
                options=OPTIONS,
                stream=False,
            )
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise JudgeUnavailable(
                    f"Ollama at {c.host} has no model {c.model!r} ({exc.error}); "
                    f"pull it there (ollama pull {c.model}) or change eval.judge_model"
                ) from exc
            status = f" (HTTP {exc.status_code})" if exc.status_code > 0 else ""
            raise JudgeUnavailable(f"Ollama at {c.host} answered{status}: {exc.error}") from exc
        except httpx.TimeoutException as exc:
            raise JudgeUnavailable(
                f"Ollama at {c.host} did not answer within {c.timeout_s:g}s"
            ) from exc
        except (ConnectionError, httpx.HTTPError) as exc:
            raise JudgeUnavailable(f"cannot reach Ollama at {c.host} ({exc})") from exc
        return str(reply.message.content or "")

    def close(self) -> None:
        self.client.close()


def winner(reference_first: str | None, candidate_first: str | None) -> str | None:
    """The pair's outcome from its two orders: the model both prefer, else ``"tie"``;
    None when either reply was unparsable."""
    if reference_first is None or candidate_first is None:
        return None
    first = {"A": "reference", "B": "candidate", "tie": "tie"}[reference_first]
    second = {"A": "candidate", "B": "reference", "tie": "tie"}[candidate_first]
    return first if first == second else "tie"


def _mean(values: Sequence[int | None]) -> dict[str, Any]:
    scored = [v for v in values if v is not None]
    return {
        "mean": sum(scored) / len(scored) if scored else None,
        "scored": len(scored),
        "unparsable": len(values) - len(scored),
    }


def _pairwise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    outcomes = [r["winner"] for r in rows]
    counts = {k: sum(1 for o in outcomes if o == k) for k in ("candidate", "reference", "tie")}
    judged = sum(counts.values())
    disagreed = sum(
        1
        for r in rows
        if r["winner"] == "tie" and not (r["reference_first"] == r["candidate_first"] == "tie")
    )
    return {
        **counts,
        "disagreed": disagreed,
        "unparsable": sum(1 for o in outcomes if o is None),
        "candidate_share": (counts["candidate"] + counts["tie"] / 2) / judged if judged else None,
    }


class _Judging:
    """One judging pass over the probes; the asker's replies, read and tallied."""

    def __init__(self, asker: _Asker) -> None:
        self.asker = asker
        self.unparsable: list[str] = []

    def _read(self, reply: str, parse: Callable[[str], Any]) -> Any:
        value = parse(reply)
        if value is None and len(self.unparsable) < KEPT_REPLIES:
            self.unparsable.append(reply[:200])
        return value

    def probe(self, probe: Probe, texts: Mapping[str, str]) -> dict[str, Any]:
        """Persona match of both answers and the pair in both orders, for one setting."""
        context = prompts.persona(probe.profile, probe.memories, probe.question, probe.reference)
        match = {
            m: self._read(self.asker.ask(prompts.match_prompt(context, texts[m])), _SCORE)
            for m in MODELS
        }
        ref, cand = texts["reference"], texts["candidate"]
        orders = {
            "reference_first": prompts.pairwise_prompt(context, ref, cand),
            "candidate_first": prompts.pairwise_prompt(context, cand, ref),
        }
        pair = {k: self._read(self.asker.ask(p), _PREFERENCE) for k, p in orders.items()}
        pair["winner"] = winner(pair["reference_first"], pair["candidate_first"])
        return {"match": match, "pairwise": pair}


def judge_answers(
    config: JudgeConfig,
    probes: Sequence[Probe],
    answers: Mapping[str, Mapping[str, Sequence[str]]],
    *,
    against: str | None = None,
) -> dict[str, Any]:
    """The judge's record (module docstring) of ``answers["reference"|"candidate"][setting]``
    (one text per probe); ``against`` says what the reference is (``"base"``,
    ``"active"``). Never raises: failures are the record's ``error``."""
    started = time.perf_counter()
    record: dict[str, Any] = {
        "model": config.model,
        "host": config.host,
        "against": against,
        "error": None,
    }
    asker: _Asker | None = None
    try:
        asker = _Asker(config)
        judging = _Judging(asker)
        settings = [s for s in SETTINGS if all(s in answers[m] for m in MODELS)]
        rows: list[dict[str, Any]] = []
        for i, probe in enumerate(probes):
            row: dict[str, Any] = {"id": probe.id}
            for s in settings:
                row[s] = judging.probe(probe, {m: answers[m][s][i] for m in MODELS})
            rows.append(row)
        record["settings"] = {
            s: {
                "match": {m: _mean([r[s]["match"][m] for r in rows]) for m in MODELS},
                "pairwise": _pairwise([r[s]["pairwise"] for r in rows]),
            }
            for s in settings
        }
        record["probes"] = rows
        record["unparsable_replies"] = judging.unparsable
    except JudgeUnavailable as exc:
        record["error"] = str(exc)
    except Exception as exc:  # the judge is never a reason to fail: record it
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if asker is not None:
            asker.close()
    record["requests"] = asker.requests if asker is not None else 0
    record["seconds"] = round(time.perf_counter() - started, 3)
    if record["error"]:
        log.warning("fidelity judge failed", model=config.model, error=record["error"])
    else:
        log.info("fidelity judged", model=config.model, requests=record["requests"])
    return record
