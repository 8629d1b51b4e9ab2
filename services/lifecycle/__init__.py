"""The model lifecycle's rules: what a job trains on, when it is skipped, what becomes of
its candidate, when a job is queued on its own. Pure functions of their arguments (the
clock and what the ledger holds included): the daemon reads, decides with these, acts.

- A **full** fine-tune trains all weights on the whole eligible corpus (best first,
  capped by ``training.max_samples``) from the profile's original base model; its
  result becomes the profile's current base.
- A **LoRA** trains on the current base with the samples curated since the last
  successful job's dataset was taken, plus a replay share of older high-quality
  samples against forgetting.
- A job whose dataset is below its minimum ends ``skipped`` (not failed), with the
  reason, unless forced.
- A candidate the gate rejects is not published; the others are.
- A LoRA is queued when the eligible samples since the last training reach the
  threshold; a schedule queues its kind for every profile that qualifies.
- A schedule missed while the daemon was down runs once at start-up when its most
  recent fire time is within the grace window and later than its last recorded run.
"""

from services.lifecycle.errors import LifecycleError
from services.lifecycle.plan import (
    REGRESSION_MAX,
    JobPlan,
    ProfileHistory,
    minimum_reason,
    plan_full,
    plan_lora,
    select_lora_samples,
    skip_reason,
)
from services.lifecycle.schedule import cron_trigger, missed_fire
from services.lifecycle.triggers import (
    Eligibility,
    schedule_qualifies,
    schedule_targets,
    threshold_reason,
)
from services.lifecycle.verdict import Verdict, judge

__all__ = [
    "REGRESSION_MAX",
    "Eligibility",
    "JobPlan",
    "LifecycleError",
    "ProfileHistory",
    "Verdict",
    "cron_trigger",
    "judge",
    "minimum_reason",
    "missed_fire",
    "plan_full",
    "plan_lora",
    "schedule_qualifies",
    "schedule_targets",
    "select_lora_samples",
    "skip_reason",
    "threshold_reason",
]
