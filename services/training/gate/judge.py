"""The evaluation gate's steps: gather the sets, score the reference and the candidate, run
the tag probe, decide, write the results (see the package docstring)."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from services.fidelity.judge import JudgeConfig
from services.persona_prompt import NO_REPEAT_NGRAM, answer_stops
from services.training.config import ResolvedConfig
from services.training.config_model import GateSettings
from services.training.dataset_reader import Selection
from services.training.gate.fidelity import (
    PROBES_FILE,
    Answers,
    FidelityProbe,
    Prompt,
    answer_both,
    check,
    judge_fidelity,
    outputs,
    read_probes,
    scores,
)
from services.training.gate.loss import LossStat, weighted_loss
from services.training.gate.probe import probe_samples, run_probe, tag_table
from services.training.gate.sets import (
    GENERAL_SET,
    REGRESSION_FILE,
    EvalSample,
    Render,
    chat_renderer,
    prompt_renderer,
    read_eval_set,
    samples_of,
)
from services.training.gate.verdict import (
    disabled_verdict,
    eval_details,
    loss_checks,
    now,
    verdict,
    write_results,
)
from services.training.inference import (
    apply_adapter,
    default_stops,
    generate_answers,
    load_for_inference,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Models:
    """The candidate (``artifact``: a LoRA adapter on ``base_dir``, or a full model) and its
    reference (``reference_model`` with ``reference_adapter``, else ``base_dir``)."""

    kind: str
    base_dir: Path
    artifact: Path
    cache_dir: Path
    device: str
    reference_model: str | None = None
    reference_adapter: Path | None = None

    def reference(self) -> dict[str, Any]:
        """The verdict's ``reference``: ``{"source", "model", "adapter"}``."""
        base = self.reference_model is None
        return {
            "source": "base" if base else "active",
            "model": str(self.base_dir) if base else self.reference_model,
            "adapter": str(self.reference_adapter) if self.reference_adapter is not None else None,
        }

    def candidate(self) -> dict[str, Any]:
        """``eval.json``'s ``candidate``."""
        return {"kind": self.kind, "artifact": str(self.artifact), "base": str(self.base_dir)}

    def load_reference(self) -> tuple[Any, Any]:
        spec = str(self.base_dir) if self.reference_model is None else self.reference_model
        return load_for_inference(
            spec, adapter=self.reference_adapter, cache_dir=self.cache_dir, device=self.device
        )

    @property
    def adapter_on_reference(self) -> bool:
        """A LoRA candidate judged against its own base: the reference plus the adapter."""
        return self.kind == "lora" and self.reference_model is None

    def add_adapter(self, reference: Any) -> Any:
        """``reference`` (consumed) with the adapter folded into its weights, as ``ask``'s
        generation worker serves it (and without the adapter's extra operations at every
        token)."""
        device = next(reference.parameters()).device
        return apply_adapter(reference, self.artifact, merge=True).to(device)

    def load_base(self) -> tuple[Any, Any]:
        """The model the candidate was trained from (``base_dir``), as ``ask`` loads it."""
        return load_for_inference(str(self.base_dir), cache_dir=self.cache_dir, device=self.device)

    def load_candidate(self) -> Any:
        lora = self.kind == "lora"
        model, _ = load_for_inference(
            self.base_dir if lora else self.artifact,
            adapter=self.artifact if lora else None,
            cache_dir=self.cache_dir,
            device=self.device,
            merge=lora,
        )
        return model


@dataclass
class EvalSets:
    """The sets a candidate is judged on, and what was left out (``warnings``)."""

    heldout: list[EvalSample]
    regression: dict[str, list[EvalSample]]  # "run", "general"
    paths: dict[str, Path]  # of the regression sets
    probe: list[EvalSample]
    warnings: list[str]

    @property
    def regression_names(self) -> list[str]:
        return [name for name, samples in self.regression.items() if samples]

    def losses(self, model: Any, tokenizer: Any, max_len: int) -> dict[str, LossStat]:
        """The loss of ``model`` on each non-empty set: ``heldout`` and the regression sets."""
        sets = {"heldout": self.heldout, **self.regression}
        return {
            name: weighted_loss(model, tokenizer, samples, max_len)
            for name, samples in sets.items()
            if samples
        }


def gather_sets(
    run_dir: Path,
    selection: Selection,
    render: Render | None,
    general_set: Path | None,
    per_mode: int,
) -> EvalSets:
    """The run's eval split, its ``regression.jsonl`` and the general set (when there is a
    chat format to render it in), and the tag probe's samples."""
    warnings: list[str] = []
    heldout = samples_of(selection.eval)
    if not heldout:
        warnings.append("no eval samples: the held-out loss was not compared")
    regression: dict[str, list[EvalSample]] = {}
    paths: dict[str, Path] = {}
    for name, path in (("run", run_dir / REGRESSION_FILE), ("general", general_set)):
        if path is None or not path.is_file():
            continue
        if name == "general" and render is None:
            warnings.append(f"{path} not used: no chat template to render it in")
            continue
        regression[name], paths[name] = read_eval_set(path, render), path
    if not any(regression.values()):
        warnings.append("no regression samples: the regression loss was not compared")
    probe = probe_samples(heldout or samples_of(selection.train), per_mode)
    return EvalSets(heldout, regression, paths, probe, warnings)


@dataclass
class Scores:
    reference: dict[str, LossStat]
    candidate: dict[str, LossStat]
    probe: dict[str, Any] | None
    # "reference", "candidate", and "base" when the reference is the active version
    fidelity: dict[str, dict[str, Answers]] | None = None


@dataclass(frozen=True)
class Fidelity:
    """What the fidelity check asks each model (see ``gate.fidelity``)."""

    probes: list[FidelityProbe]
    prompt: Prompt
    max_new_tokens: int

    def answers(self, model: Any, tokenizer: Any) -> dict[str, Answers]:
        stops = [*default_stops(tokenizer), *answer_stops()]

        def generate(prompts: list[str]) -> list[tuple[str, bool]]:
            out = generate_answers(
                model, tokenizer, prompts, self.max_new_tokens, 0.0, stops, NO_REPEAT_NGRAM
            )
            return [(a.text, a.stopped) for a in out]

        return answer_both(self.probes, self.prompt, generate)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def score(
    models: Models,
    sets: EvalSets,
    tokenizer: Any,
    settings: GateSettings,
    max_len: int,
    fidelity: Fidelity | None = None,
) -> Scores:
    """The reference's losses (and fidelity answers), then the candidate's, its tag probe
    (and fidelity answers); one model in memory at a time. ``tokenizer`` is the
    candidate's. When the reference is the active version, the base model answers the
    fidelity probes too, so that every run shows what training on the person added to it."""
    _free_memory()
    model, reference_tokenizer = models.load_reference()
    reference = sets.losses(model, reference_tokenizer, max_len)
    log.info("gate reference scored", **{k: round(v.loss, 4) for k, v in reference.items()})
    answers: dict[str, dict[str, Answers]] | None = None
    if fidelity is not None:
        answers = {"reference": fidelity.answers(model, reference_tokenizer)}
    if models.adapter_on_reference:
        model = models.add_adapter(model)  # the base is the reference: reuse it
    else:
        del model
        _free_memory()
        model = None
        if fidelity is not None and answers is not None and models.reference_model is not None:
            base, base_tokenizer = models.load_base()
            answers["base"] = fidelity.answers(base, base_tokenizer)
            log.info("gate base answered", probes=len(fidelity.probes))
            if models.kind == "lora":
                model = models.add_adapter(base)  # the candidate's own base: reuse it
            del base
            _free_memory()
        if model is None:
            model = models.load_candidate()
    candidate = sets.losses(model, tokenizer, max_len)
    log.info("gate candidate scored", **{k: round(v.loss, 4) for k, v in candidate.items()})
    probe = None
    if settings.probe_tokens > 0 and settings.probe_per_mode > 0 and sets.probe:
        probe = run_probe(model, tokenizer, sets.probe, settings.probe_tokens, tag_table())
    if fidelity is not None and answers is not None:
        answers["candidate"] = fidelity.answers(model, tokenizer)
        log.info("gate fidelity answered", probes=len(fidelity.probes))
    del model
    _free_memory()
    return Scores(reference, candidate, probe, answers)


def fidelity_of(run_dir: Path, tokenizer: Any, settings: GateSettings) -> Fidelity | None:
    """The fidelity check's probes and prompt format; None when it is off or has no probes."""
    if settings.fidelity_probes <= 0:
        return None
    probes = read_probes(run_dir / PROBES_FILE)[: settings.fidelity_probes]
    prompt = prompt_renderer(run_dir, tokenizer)
    if not probes or prompt is None:
        return None
    return Fidelity(probes, prompt, settings.fidelity_tokens)


def fidelity_verdict(
    fidelity: Fidelity, answers: dict[str, dict[str, Answers]], models: Models, tolerance: float
) -> dict[str, Any]:
    """The verdict's ``fidelity``: each model's scores and the check."""
    reference = scores(fidelity.probes, answers["reference"], None)
    candidate = scores(fidelity.probes, answers["candidate"], answers["reference"])
    out = {
        **check(candidate, reference, tolerance),
        "probes": len(fidelity.probes),
        "sources": sorted({p.source for p in fidelity.probes}),
        "transfer_against": models.reference()["source"],
        "reference": reference,
        "candidate": candidate,
    }
    if "base" in answers:  # the reference is the active version: the base, for the record
        out["base"] = scores(fidelity.probes, answers["base"], None)
    return out


def evaluate_candidate(
    *,
    run_dir: Path,
    kind: str,
    base_dir: Path,
    artifact: Path,
    resolved: ResolvedConfig,
    selection: Selection,
    cache_dir: Path,
    reference_model: str | None = None,
    reference_adapter: Path | None = None,
    device: str = "cpu",
    general_set: Path | None = GENERAL_SET,
    judge: JudgeConfig | None = None,
) -> dict[str, Any]:
    """Judge the candidate (``artifact``: a LoRA adapter on ``base_dir``, or a full model),
    write ``eval.json`` and the ``run-summary.json`` ``"gate"`` key; return the verdict.
    With ``judge``, an LLM also judges the fidelity answers: ``eval.json``'s
    ``fidelity_judge``, not part of the verdict."""
    started = time.perf_counter()
    settings = resolved.config.gate
    models = Models(kind, base_dir, artifact, cache_dir, device, reference_model, reference_adapter)
    if not settings.enabled:
        disabled = disabled_verdict(models.reference(), settings)
        write_results(run_dir, disabled, {"created": now()})
        return disabled
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(artifact)
    render = chat_renderer(run_dir, tokenizer)
    sets = gather_sets(run_dir, selection, render, general_set, settings.probe_per_mode)
    fidelity = fidelity_of(run_dir, tokenizer, settings)
    result = score(models, sets, tokenizer, settings, resolved.config.max_seq_length, fidelity)
    heldout, regression = loss_checks(
        result.candidate, result.reference, sets.regression_names, settings
    )
    persona = judged = None
    if fidelity is not None and result.fidelity is not None:
        persona = fidelity_verdict(fidelity, result.fidelity, models, settings.fidelity_tolerance)
        if judge is not None:
            against = models.reference()["source"]
            judged = judge_fidelity(judge, fidelity.probes, result.fidelity, against)
    gate = verdict(
        heldout=heldout,
        regression=regression,
        probe=result.probe,
        reference=models.reference(),
        settings=settings,
        warnings=sets.warnings,
        started=started,
        fidelity=persona,
    )
    details = eval_details(
        candidate=models.candidate(),
        candidate_losses=result.candidate,
        reference_losses=result.reference,
        regression_sets=sets.paths,
        probe=result.probe,
        fidelity_outputs=None
        if fidelity is None or result.fidelity is None
        else outputs(fidelity.probes, result.fidelity),
        fidelity_judge=judged,
    )
    write_results(run_dir, gate, details)
    log.info("gate", passed=gate["passed"], reason=gate["reason"])
    return gate
