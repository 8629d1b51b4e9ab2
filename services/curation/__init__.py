"""Curation: a memory becomes a tagged, cleaned, quality-weighted training sample.

Everything here is a pure function of the memory and the rules of
``etc/curation.json`` (loaded once with :func:`load_rules`); nothing reads or writes
anything else.

Decisions (also in the ``notes`` of ``etc/curation.json``):

- **Mode.** ``metadata.cognitiveMode`` (dual|emulation|agent, any case) overrides the
  type mapping; an invalid value is ignored and noted in ``Sample.notes``. A type that
  no mode lists gets ``default_mode`` (emulation), noted. Prose is always emulation,
  kind ``continuation``. Alpaca records (type ``task``) are agent: instruction
  following is what ``<instruction>`` -> ``<action>`` teaches, and docs/ARCHITECTURE.md
  ("Cognitive modes and samples") lists ``task`` under agent; moving ``task`` in the file
  changes that.
- **Tags.** ``prompt`` and ``response`` are wrapped as ``<user>...</user>``,
  ``<assistant>...</assistant>`` (dual: thought/world, agent: instruction/action);
  chat context turns are wrapped in the same mode's tags (user -> prompt tag,
  assistant -> response tag); system and other roles are dropped, noted.
- **Tool events** (``metadata.toolName``): the response is the text response, if any,
  then a line of JSON ``{"tool", "inputs", "outputs", "success"}`` (the keys the
  metadata has), in whatever mode the memory is.
- **No response.** A memory whose type is in ``no_response_prompts`` (observation,
  journal, reflection, inner_dialogue, dream) trains its content, the person's own
  words, as the response to that type's prompt (the quality heuristic takes
  ``synthetic_prompt_penalty`` off). Any other memory without a response is excluded
  (``no_response``, e.g. a conversation event that recorded only the question). A
  response with an empty prompt is excluded (``no_prompt``).
- **Cleaning.** Responses only: filler phrases that open a sentence are removed, and
  sentences holding a filler sentence ("I hope this helps") are removed whole,
  case-insensitively; spaces tidied, line structure kept. Prompts and context are
  kept as written (stripped). A response that was only filler is excluded.
- **Exclusions**, first that applies: ``empty``, ``no_response``, ``no_prompt``,
  ``only_filler``, ``too_short`` (fewer than ``min_response_words``), ``low_quality``
  (below ``quality.min_quality``). ``Sample.excluded`` is the reason for a person,
  ``Sample.excluded_code`` the stable code; an excluded sample weighs 0.0 but still
  has its quality and split.
- **Quality**: ``quality_score`` (0..10), else ``importance * 10``, else the heuristic
  of ``quality.heuristic`` (length, lexical variety, prompt, filler, synthetic prompt;
  a prose chunk from ``continuation_base``, on variety and filler only), clamped to
  0..10 and rounded to 6 places (so 0.7 * 10 is 7.0). Weight: the highest tier reached
  (>= 9 -> 2.0, >= 8 -> 1.5, >= 7 -> 1.0). The heuristic tops out at 8.0.
- **Prose** (format ``prose``): kind ``continuation``, mode emulation, prompt
  ``continuation_prompt`` ("Continue writing in my voice: <title> (part i of n)", the
  title from ``metadata.title`` or the prompt, the part from ``metadata.chunk`` /
  ``chunks`` or the ``chunk N`` locator), the chunk as the response.
- **Split**: ``eval`` when the first 64 bits of sha256("split:" + memory id), as a
  fraction, are below ``eval_share``; the same id always gets the same split.
- **Contamination**: :func:`find_contamination` lists another mode's tags found in a
  sample (prompt, response or context); :func:`validate_samples` raises
  :class:`ContaminationError` naming every offender. Curation does not exclude such
  samples: the dataset build fails on them (docs/ARCHITECTURE.md, "Cognitive modes and
  samples"), naming the ids to fix.
"""

from services.curation.config import (
    DEFAULT_ETC_DIR,
    MODES,
    CurationError,
    CurationRules,
    MetricThresholds,
    load_rules,
    parse_rules,
)
from services.curation.curate import curate
from services.curation.mode_config import (
    ModeConfig,
    load_mode_config,
    load_mode_configs,
    parse_mode_config,
)
from services.curation.modes import (
    ContaminationError,
    assign_mode,
    contamination,
    find_contamination,
    validate_samples,
)
from services.curation.sample import Sample
from services.curation.split import assign_split

__all__ = [
    "DEFAULT_ETC_DIR",
    "MODES",
    "ContaminationError",
    "CurationError",
    "CurationRules",
    "MetricThresholds",
    "ModeConfig",
    "Sample",
    "assign_mode",
    "assign_split",
    "contamination",
    "curate",
    "find_contamination",
    "load_mode_config",
    "load_mode_configs",
    "load_rules",
    "parse_mode_config",
    "parse_rules",
    "validate_samples",
]
