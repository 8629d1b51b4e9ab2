"""Loading and validating the curation rules (the per-mode configs are
:mod:`services.curation.mode_config`, which uses the helpers here).

``etc/curation.json`` becomes a :class:`CurationRules`; ``etc/modes/<mode>-config.json``
a ``ModeConfig``. Both are validated on load: an invalid file raises
:class:`CurationError` naming the file and the key (``quality.weights.1.weight``), so
that a person can open the file and fix it. Keys starting with ``$`` and ``notes``
are comments; any other unknown key is an error (it is usually a typo).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.errors import PersonadError
from services.shipped import etc_dir

MODES: tuple[str, ...] = ("dual", "emulation", "agent")
Mode = Literal["dual", "emulation", "agent"]

# The shipped configuration (services.shipped).
DEFAULT_ETC_DIR = etc_dir()


class CurationError(PersonadError):
    """The base error of curation; for a bad config file, ``path`` and ``key`` say where."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        super().__init__(message)
        self.path = path
        self.key = key


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ---------------------------------------------------------------------- curation


class ModeTags(StrictModel):
    prompt_tag: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    response_tag: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    types: tuple[str, ...] = ()

    @field_validator("types")
    @classmethod
    def _lower_types(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalize_type(t) for t in v)


class WeightTier(StrictModel):
    min_quality: float = Field(ge=0, le=10)
    weight: float = Field(gt=0)


class Heuristic(StrictModel):
    base: float = 5.0
    good_length_words: tuple[int, int] = (8, 80)
    good_length_bonus: float = 1.5
    long_words: int = Field(default=200, ge=1)
    long_penalty: float = 1.0
    variety_window: int = Field(default=50, ge=1)
    variety_min_words: int = Field(default=8, ge=1)
    variety_ratio: float = Field(default=0.6, ge=0, le=1)
    variety_bonus: float = 1.0
    repetitive_ratio: float = Field(default=0.35, ge=0, le=1)
    repetitive_penalty: float = 1.5
    prompt_min_words: int = Field(default=3, ge=0)
    prompt_bonus: float = 0.5
    filler_penalty: float = 1.5
    synthetic_prompt_penalty: float = 0.5
    continuation_base: float = 7.0


class QualityRules(StrictModel):
    min_quality: float = Field(ge=0, le=10)
    weights: tuple[WeightTier, ...] = Field(min_length=1)
    heuristic: Heuristic = Heuristic()


class FillerRules(StrictModel):
    phrases: tuple[str, ...] = ()
    sentences: tuple[str, ...] = ()


class MetricThresholds(StrictModel):
    """What the dataset metrics call good and bad (MetaHuman's quality tiers); a value
    between the two is fair."""

    short_words: int = Field(default=40, ge=1)
    long_words: int = Field(default=100, ge=1)
    avg_assistant_words: tuple[float, float] = (25.0, 40.0)
    bad_avg_assistant_words: float = Field(default=60.0, ge=0)
    min_short_share: float = Field(default=0.8, ge=0, le=1)
    bad_short_share: float = Field(default=0.6, ge=0, le=1)
    max_filler_share: float = Field(default=0.02, ge=0, le=1)
    bad_filler_share: float = Field(default=0.05, ge=0, le=1)
    long_share: tuple[float, float] = (0.05, 0.1)
    min_mode_share: float = Field(default=0.1, ge=0, le=1)
    bad_mode_share: float = Field(default=0.05, ge=0, le=1)
    prose_tokens: tuple[int, int] = (700, 2000)


class CurationRules(StrictModel):
    """The rules of ``etc/curation.json`` (see its ``notes`` for what each does)."""

    modes: dict[str, ModeTags]
    default_mode: Mode = "emulation"
    no_response_prompts: dict[str, str] = {}
    continuation_prompt: str = "Continue writing in my voice: {title}"
    continuation_part: str = " (part {part} of {parts})"
    filler: FillerRules = FillerRules()
    min_response_words: int = Field(default=5, ge=0)
    eval_share: float = Field(default=0.1, ge=0, lt=1)
    quality: QualityRules
    metrics: MetricThresholds = MetricThresholds()
    # Where the rules came from (for messages); not a key of the file.
    source: str = Field(default="", exclude=True)

    @field_validator("no_response_prompts")
    @classmethod
    def _lower_keys(cls, v: dict[str, str]) -> dict[str, str]:
        return {normalize_type(k): p for k, p in v.items()}

    def tags(self, mode: str) -> tuple[str, str]:
        """The (prompt, response) tag names of a mode: ``("user", "assistant")``."""
        m = self.modes[mode]
        return m.prompt_tag, m.response_tag

    def mode_for_type(self, memory_type: str) -> str | None:
        """The mode a memory type maps to, or None when no mode lists it."""
        t = normalize_type(memory_type)
        return next((mode for mode, m in self.modes.items() if t in m.types), None)

    def weight_for(self, quality: float) -> float:
        """The weight of a quality; 0.0 below ``quality.min_quality``."""
        if quality < self.quality.min_quality:
            return 0.0
        for tier in self.quality.weights:
            if quality >= tier.min_quality:
                return tier.weight
        return 0.0  # unreachable: validation keeps min_quality >= the lowest tier


def normalize_type(memory_type: str) -> str:
    return memory_type.strip().lower().replace("-", "_").replace(" ", "_")


def _check_rules(rules: CurationRules) -> tuple[str, str] | None:
    """Checks across keys; returns (key, problem) for the first one that fails."""
    if set(rules.modes) != set(MODES):
        missing = sorted(set(MODES) - set(rules.modes))
        extra = sorted(set(rules.modes) - set(MODES))
        what = f"missing {missing}" if missing else f"unknown {extra}"
        return "modes", f"must define exactly the modes {list(MODES)} ({what})"
    seen_tags: dict[str, str] = {}
    seen_types: dict[str, str] = {}
    for mode in MODES:
        m = rules.modes[mode]
        for key, tag in (("prompt_tag", m.prompt_tag), ("response_tag", m.response_tag)):
            if tag in seen_tags:
                return f"modes.{mode}.{key}", f"tag '{tag}' is already used by {seen_tags[tag]}"
            seen_tags[tag] = f"{mode}.{key}"
        for i, t in enumerate(m.types):
            if t in seen_types:
                return f"modes.{mode}.types.{i}", f"type '{t}' is also listed under {seen_types[t]}"
            seen_types[t] = mode
    tiers = rules.quality.weights
    for i in range(1, len(tiers)):
        if tiers[i].min_quality >= tiers[i - 1].min_quality:
            return (
                f"quality.weights.{i}.min_quality",
                "tiers must be listed from the highest min_quality down",
            )
    if rules.quality.min_quality < tiers[-1].min_quality:
        return (
            "quality.min_quality",
            f"{rules.quality.min_quality} is below the lowest weight tier "
            f"({tiers[-1].min_quality}): samples in between would have no weight",
        )
    lo, hi = rules.quality.heuristic.good_length_words
    if lo > hi:
        return "quality.heuristic.good_length_words", f"[{lo}, {hi}] is not a range"
    th = rules.metrics
    for key, (lo_r, hi_r) in (
        ("avg_assistant_words", th.avg_assistant_words),
        ("long_share", th.long_share),
        ("prose_tokens", th.prose_tokens),
    ):
        if lo_r > hi_r:
            return f"metrics.{key}", f"[{lo_r}, {hi_r}] is not a range"
    for key, good, bad, better in (
        ("bad_avg_assistant_words", th.avg_assistant_words[1], th.bad_avg_assistant_words, "above"),
        ("bad_short_share", th.min_short_share, th.bad_short_share, "below"),
        ("bad_filler_share", th.max_filler_share, th.bad_filler_share, "above"),
        ("bad_mode_share", th.min_mode_share, th.bad_mode_share, "below"),
    ):
        if (bad < good) if better == "above" else (bad > good):
            return f"metrics.{key}", f"{bad:g} must be at or {better} the good limit {good:g}"
    for key, text, fields in (
        ("continuation_prompt", rules.continuation_prompt, {"title": "t"}),
        ("continuation_part", rules.continuation_part, {"part": 1, "parts": 2}),
    ):
        try:
            text.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            return key, f"may use only {{{'}, {'.join(fields)}}} placeholders ({exc!r})"
    for t, prompt in rules.no_response_prompts.items():
        if not prompt.strip():
            return f"no_response_prompts.{t}", "must not be empty"
    for key, entries in (
        ("filler.phrases", rules.filler.phrases),
        ("filler.sentences", rules.filler.sentences),
    ):
        for i, entry in enumerate(entries):
            if not entry.strip():
                return f"{key}.{i}", "must not be empty"
    return None


# ---------------------------------------------------------------------- loading


def strip_comments(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: strip_comments(v)
            for k, v in value.items()
            if not (k.startswith("$") or k == "notes")
        }
    if isinstance(value, list):
        return [strip_comments(v) for v in value]
    return value


def _non_finite(value: Any, key: str = "") -> tuple[str, str] | None:
    """(key, problem) for the first NaN or infinity (which JSON parsing lets through)."""
    if isinstance(value, float) and not math.isfinite(value):
        return key, f"{value} is not a finite number"
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{key}.{k}" if key else str(k))
        if found:
            return found
    return None


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CurationError(f"{path}: cannot read: {exc.strerror or exc}", path=str(path)) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CurationError(
            f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            path=str(path),
        ) from exc


def validate_model(model: type[StrictModel], data: Any, source: str) -> Any:
    if not isinstance(data, dict):
        raise CurationError(f"{source}: must hold a JSON object", path=source)
    data = strip_comments(data)
    bad = _non_finite(data)
    if bad:
        raise CurationError(f"{source}: key '{bad[0]}': {bad[1]}", path=source, key=bad[0])
    try:
        # JSON mode: arrays become tuples, and strict typing still rejects "3" for 3.
        return model.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        # Pydantic names union members in the location ("str", "tuple[str, ...]"): drop them.
        key = ".".join(p for p in key.split(".") if "[" not in p and p not in ("str", "int"))
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "missing"
        else:
            msg = f"{err['msg']} (got {json.dumps(err.get('input'), default=str)[:80]})"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise CurationError(f"{source}: key '{key}': {msg}{more}", path=source, key=key) from exc


def parse_rules(data: Any, source: str = "<rules>") -> CurationRules:
    """Curation rules from an already-parsed JSON object (``source`` names it in errors)."""
    rules: CurationRules = validate_model(CurationRules, data, source).model_copy(
        update={"source": source}
    )
    problem = _check_rules(rules)
    if problem:
        key, msg = problem
        raise CurationError(f"{source}: key '{key}': {msg}", path=source, key=key)
    return rules


def load_rules(path: Path | str | None = None) -> CurationRules:
    """Load and validate ``etc/curation.json`` (or ``path``)."""
    p = Path(path) if path is not None else DEFAULT_ETC_DIR / "curation.json"
    return parse_rules(read_json(p), str(p))
