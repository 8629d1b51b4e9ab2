"""The evaluation gate: a trained candidate against the reference model, before publishing.

Run by the training child right after training (``services/training/__main__.py``), under
the resolved config's ``gate`` settings (``services.training.config_model.GateSettings``):

- **held-out loss**: the mean weighted completion-token loss (each token's loss weighted
  by its sample's weight) of the candidate and of the reference on the run's eval split.
  Passes when ``candidate <= reference x (1 - gate.min_improvement)``. Without eval
  samples it is not compared (noted in ``warnings``).
- **regression loss**: the same loss on the regression set, ``<run_dir>/regression.jsonl``
  (older held-out samples, written by the daemon) when present, plus the general-text set
  ``etc/eval/general.jsonl``. Passes when
  ``candidate <= reference x (1 + gate.max_regression)``.
- **tag probe**: for each mode in the eval split (the train split when there is no eval
  split), up to ``gate.probe_per_mode`` samples' prompts are continued greedily for
  ``gate.probe_tokens`` tokens by the candidate; an output holding another mode's tags
  (``etc/curation.json``) fails the gate.

The reference is the active model (``--reference-model`` / ``--reference-adapter`` of the
training child), else the base model the run trained from. Each model tokenizes with its
own tokenizer. A line of a regression set is a ``fine_tune_dataset.jsonl`` line; one with
``messages`` but no ``prompt``/``completion`` is rendered in the run's chat format (the
template of ``schema_applied.json``, else the candidate tokenizer's chat template).

Modules: ``sets`` (the samples: eval split, JSONL sets, chat rendering), ``loss`` (the
weighted loss of a model on a set), ``probe`` (the tag probe), ``verdict`` (the checks, the
decision, the files) and ``judge`` (:func:`evaluate_candidate`, the steps in order). Models
are loaded and run with ``services.training.inference``; torch and transformers are
imported only when a candidate is judged, so importing this package stays light.

The verdict (:func:`evaluate_candidate`'s return value, the ``done`` event's
``metrics["gate"]``)::

    {"passed": bool, "reason": str, "reasons": [str], "reference": {"source", "model",
     "adapter"}, "heldout": CHECK | null, "regression": CHECK | null,
     "probe": {"passed", "checked", "foreign": [{"id", "mode", "tags"}]} | null,
     "settings": {...}, "warnings": [str], "seconds": float}

    CHECK = {"candidate", "reference", "limit", "passed", "samples", "tokens"}

``eval.json`` in the run directory holds the verdict plus every number (per-set losses,
weighted and unweighted, token counts, truncation), the candidate and the probe outputs;
``run-summary.json`` gains the verdict under ``"gate"``.
"""

from services.training.gate.judge import evaluate_candidate
from services.training.gate.loss import LossStat, weighted_loss
from services.training.gate.probe import foreign_tags, probe_samples, run_probe, tag_table
from services.training.gate.sets import (
    GENERAL_SET,
    REGRESSION_FILE,
    EvalSample,
    chat_renderer,
    read_eval_set,
)
from services.training.gate.verdict import EVAL_FILE, compare, decide, write_results

__all__ = [
    "EVAL_FILE",
    "GENERAL_SET",
    "REGRESSION_FILE",
    "EvalSample",
    "LossStat",
    "chat_renderer",
    "compare",
    "decide",
    "evaluate_candidate",
    "foreign_tags",
    "probe_samples",
    "read_eval_set",
    "run_probe",
    "tag_table",
    "weighted_loss",
    "write_results",
]
