"""The lifecycle's rules as pure functions: no ledger, no threads, no processes."""

from __future__ import annotations

from typing import Any

import pytest

from services.curation import Sample
from services.lifecycle import (
    REGRESSION_MAX,
    Eligibility,
    ProfileHistory,
    judge,
    plan_full,
    plan_lora,
    schedule_qualifies,
    schedule_targets,
    skip_reason,
    threshold_reason,
)
from services.settings import TriggerSettings


def _record(
    i: int, *, quality: float = 9.0, split: str = "train", excluded: str | None = None
) -> dict[str, Any]:
    return Sample(
        memory_id=f"m{i:04d}",
        mode="emulation",
        kind="chat",
        prompt=f"<user>question {i}</user>",
        response=f"<assistant>answer {i}</assistant>",
        context=(),
        quality=quality,
        weight=0.0 if excluded else 2.0,
        split=split,
        excluded=excluded,
        filler=False,
        assistant_words=2,
    ).to_record()


def _triggers(**values: Any) -> TriggerSettings:
    return TriggerSettings(**values)


def _history(new: list[dict[str, Any]], old: list[dict[str, Any]], **kw: Any) -> ProfileHistory:
    return ProfileHistory(
        current_base=kw.get("current_base"),
        base_job=kw.get("base_job"),
        cut=kw.get("cut", "2026-11-20T12:00:00"),
        new=new,
        old=old,
    )


# -- planning a job -----------------------------------------------------------------------


def test_a_full_fine_tune_trains_the_whole_corpus_from_the_original_base() -> None:
    plan = plan_full("org/base")
    assert (plan.base, plan.samples, plan.regression) == ("org/base", None, [])
    assert plan.summary == {"base": "org/base"}


def test_a_first_lora_trains_every_eligible_new_sample_on_the_original_base() -> None:
    new = [_record(i) for i in range(6)] + [_record(99, excluded="too short")]
    plan = plan_lora(
        _history(new, [], cut=None), job_id=1, original_base="org/base", triggers=_triggers()
    )
    assert plan.base == "org/base"
    assert plan.samples is not None
    assert [s.memory_id for s in plan.samples] == [f"m{i:04d}" for i in range(6)]
    assert plan.regression == []
    assert plan.summary == {"base": "org/base", "base_job": None, "since": None, "replayed": 0}


def test_a_lora_replays_a_share_of_older_good_samples_picked_by_the_job() -> None:
    new = [_record(i) for i in range(100, 108)]
    old = [_record(i) for i in range(20)] + [_record(i, quality=6.0) for i in range(50, 60)]
    triggers = _triggers(replay_fraction=0.25, replay_min_quality=8)
    plan = plan_lora(_history(new, old), job_id=7, original_base="b", triggers=triggers)
    assert plan.samples is not None and plan.summary["replayed"] == 2
    assert [s.memory_id for s in plan.samples[:8]] == [r["memory_id"] for r in new]
    replayed = plan.samples[8:]
    assert len(replayed) == 2 and all(s.quality >= 8 for s in replayed)
    assert all(s.memory_id in {r["memory_id"] for r in old[:20]} for s in replayed)
    # The same job picks the same ones; another job may pick others, never more.
    again = plan_lora(_history(new, old), job_id=7, original_base="b", triggers=triggers)
    assert again.samples == plan.samples
    other = plan_lora(_history(new, old), job_id=8, original_base="b", triggers=triggers)
    assert other.summary["replayed"] == 2


def test_replay_is_capped_by_replay_max() -> None:
    new = [_record(i) for i in range(100, 140)]
    old = [_record(i) for i in range(40)]
    triggers = _triggers(replay_fraction=1.0, replay_max=3)
    plan = plan_lora(_history(new, old), job_id=1, original_base="b", triggers=triggers)
    assert plan.summary["replayed"] == 3 and plan.samples is not None
    assert len(plan.samples) == 43


def test_a_lora_after_a_full_fine_tune_trains_on_its_model() -> None:
    plan = plan_lora(
        _history([_record(1)], [], current_base="/runs/full/model", base_job=4),
        job_id=5,
        original_base="org/base",
        triggers=_triggers(),
    )
    assert plan.base == "/runs/full/model"
    assert plan.summary["base"] == "/runs/full/model" and plan.summary["base_job"] == 4


def test_a_job_naming_a_base_trains_on_it() -> None:
    full = plan_full("org/base", "org/other")
    assert (full.base, full.samples) == ("org/other", None)
    assert full.summary == {"base": "org/other", "base_requested": True}
    history = _history([_record(1)], [_record(2)], current_base="/runs/full/model", base_job=4)
    # A LoRA on another base than the current one: the whole corpus, on that base.
    lora = plan_lora(
        history, job_id=5, original_base="org/base", triggers=_triggers(), requested_base="o/x"
    )
    assert (lora.base, lora.samples, lora.regression) == ("o/x", None, [])
    assert lora.summary == {
        "base": "o/x",
        "base_job": None,
        "since": None,
        "all": True,
        "base_requested": True,
    }
    # Naming the current base changes nothing.
    same = plan_lora(
        history,
        job_id=5,
        original_base="org/base",
        triggers=_triggers(),
        requested_base="/runs/full/model",
    )
    plain = plan_lora(history, job_id=5, original_base="org/base", triggers=_triggers())
    assert (same.base, same.samples, same.summary) == (plain.base, plain.samples, plain.summary)


def test_the_regression_set_is_the_newest_older_held_out_samples() -> None:
    old = [_record(i, split="eval" if i % 2 else "train") for i in range(2 * REGRESSION_MAX + 50)]
    plan = plan_lora(_history([], old), job_id=1, original_base="b", triggers=_triggers())
    assert len(plan.regression) == REGRESSION_MAX
    assert all(s.split == "eval" for s in plan.regression)
    assert plan.regression[-1].memory_id == old[-1]["memory_id"]


# -- minimum samples ----------------------------------------------------------------------


def _mode_minimum(mode: str) -> int:
    return {"dual": 30, "emulation": 20}[mode]


@pytest.mark.parametrize(
    ("kind", "mode", "n", "expected"),
    [
        ("lora", None, 9, "below the LoRA (triggers.lora_min_samples) minimum of 10"),
        ("lora", None, 10, None),
        ("lora", "dual", 9, "below the LoRA (triggers.lora_min_samples) minimum of 10"),
        (
            "full",
            "dual",
            29,
            "below the dual mode's full fine-tune (dataset.full.min_samples) minimum of 30",
        ),
        ("full", "emulation", 20, None),
        ("full", None, 99, "below the full (triggers.full_min_samples) minimum of 100"),
        ("full", None, 100, None),
    ],
)
def test_a_job_below_its_minimum_is_skipped(
    kind: str, mode: str | None, n: int, expected: str | None
) -> None:
    triggers = _triggers(lora_min_samples=10, full_min_samples=100)
    reason = skip_reason(kind, mode, n, triggers=triggers, mode_minimum=_mode_minimum)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason
        assert reason.startswith(f"{n} training samples") and "--force" in reason


def test_a_forced_job_below_its_minimum_is_not_skipped() -> None:
    triggers = _triggers(lora_min_samples=10)
    assert (
        skip_reason("lora", None, 1, triggers=triggers, mode_minimum=_mode_minimum, force=True)
        is None
    )


def test_a_lora_never_reads_a_mode_minimum() -> None:
    def boom(mode: str) -> int:
        raise AssertionError("read")

    assert (
        skip_reason("lora", "dual", 50, triggers=_triggers(lora_min_samples=10), mode_minimum=boom)
        is None
    )


# -- the gate's verdict -------------------------------------------------------------------


def test_a_candidate_the_gate_rejects_is_not_published() -> None:
    gate = {"passed": False, "reason": "held-out loss did not improve by the margin"}
    verdict = judge("full", {"gate": gate, "eval_loss": 1.0})
    assert verdict.rejected == "gate: held-out loss did not improve by the margin"
    assert not verdict.publish and not verdict.new_base


@pytest.mark.parametrize(
    "metrics", [None, {}, {"gate": {"passed": True}}, {"gate": "skipped"}, {"eval_loss": 1.0}]
)
def test_a_passed_or_ungated_candidate_is_published(metrics: dict[str, Any] | None) -> None:
    lora, full = judge("lora", metrics), judge("full", metrics)
    assert lora.publish and full.publish
    assert lora.rejected is None and full.rejected is None
    # Only a full fine-tune becomes the profile's base.
    assert (lora.new_base, full.new_base) == (False, True)


def test_a_gate_without_a_verdict_counts_as_failed() -> None:
    assert judge("lora", {"gate": {"reason": "no eval"}}).rejected == "gate: no eval"


# -- what queues a job on its own ---------------------------------------------------------


def test_the_threshold_queues_a_lora_once_reached() -> None:
    assert threshold_reason(may_train=True, since_cut=49, threshold=50) is None
    assert threshold_reason(may_train=True, since_cut=50, threshold=50) == "threshold (50 new)"
    assert threshold_reason(may_train=True, since_cut=120, threshold=50) == "threshold (120 new)"
    assert threshold_reason(may_train=False, since_cut=120, threshold=50) is None


def test_schedules_fire_for_the_profiles_that_qualify() -> None:
    profiles = {
        "alice": Eligibility(may_train=True, since_cut=40, total=40),
        "bob": Eligibility(may_train=True, since_cut=10, total=10),
        "carol": Eligibility(may_train=True, since_cut=0, total=0),
        "dave": Eligibility(may_train=False, since_cut=80, total=80),
        "erin": Eligibility(may_train=True, since_cut=0, total=35),
    }
    assert schedule_targets("lora", profiles, full_min_samples=30) == ["alice", "bob"]
    assert schedule_targets("full", profiles, full_min_samples=30) == ["alice", "erin"]
    assert schedule_targets("lora", {}, full_min_samples=30) == []


def test_a_scheduled_full_fine_tune_needs_the_full_minimum() -> None:
    standing = Eligibility(may_train=True, since_cut=0, total=30)
    assert schedule_qualifies("full", standing, full_min_samples=30)
    assert not schedule_qualifies("full", standing, full_min_samples=31)
    assert not schedule_qualifies("lora", standing, full_min_samples=0)


def test_an_empty_dataset_is_skipped_even_when_forced() -> None:
    triggers = TriggerSettings()
    reason = skip_reason(
        "lora", None, 0, triggers=triggers, mode_minimum=lambda m: 0, force=True, required=4
    )
    assert reason is not None and "since the last training" in reason and "--all" in reason
    full = skip_reason(
        "full", "agent", 2, triggers=triggers, mode_minimum=lambda m: 0, force=True, required=4
    )
    assert full is not None and "of mode agent in the profile's eligible corpus" in full
    assert (
        skip_reason("lora", None, 4, triggers=triggers, mode_minimum=lambda m: 0, force=True)
        is None
    )
