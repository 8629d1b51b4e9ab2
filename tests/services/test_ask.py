"""Who answers a question (the active version, the base model, Ollama or a local child),
and how a local one answers: a warm generation worker or a one-shot child."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from services.ask import (
    NO_REPEAT_NGRAM,
    AskConfig,
    Target,
    answer,
    answer_stops,
    prompt_renderer,
    targets,
)
from services.curation.modes import mode_tags
from services.generation_pool import WorkerPool
from services.generation_worker import Reply, WorkerSpec
from services.persona_prompt import ask_messages
from services.training.inference import cut_at_stop


def test_with_nothing_published_the_base_model_answers() -> None:
    found = targets(
        active=None, serving=("org/base", None), base_model="org/base", compare_base=False
    )
    assert found == [Target("base", "org/base")]
    # Asked to compare, still only the base: there is nothing to compare with.
    assert targets(
        active=None, serving=("org/base", None), base_model="org/base", compare_base=True
    ) == [Target("base", "org/base")]


def test_the_active_version_answers_and_the_base_beside_it_when_asked() -> None:
    adapter = Path("/models/alice/v3/adapter")
    serving = ("org/base", adapter)
    assert targets(active=3, serving=serving, base_model="org/base", compare_base=False) == [
        Target("v3", "org/base", adapter)
    ]
    both = targets(active=3, serving=serving, base_model="org/base", compare_base=True)
    assert [t.label for t in both] == ["v3", "base"]
    assert both[0].describe() == f"org/base + {adapter}"
    assert both[1].describe() == "org/base" and both[1].adapter is None


def test_a_version_published_to_ollama_answers_from_ollama_the_base_never() -> None:
    found = targets(
        active=2,
        serving=("/models/alice/v2/model", None),
        base_model="org/base",
        compare_base=True,
        ollama_model="personad-alice:v2",
    )
    assert [(t.label, t.ollama_model) for t in found] == [
        ("v2", "personad-alice:v2"),
        ("base", None),
    ]
    # The answer names the local model either way.
    assert found[0].describe() == "/models/alice/v2/model"


def test_a_local_answer_ends_at_the_emulation_modes_closing_tag() -> None:
    assert answer_stops() == [f"</{mode_tags()['emulation'][1]}"] == ["</assistant"]
    # Well-formed or not, the closing tag ends the answer.
    for said in ("voilà.</assistant>", "voilà.</assistant\n<assistance>Well,"):
        assert cut_at_stop(said, answer_stops()) == "voilà."


class RecordingPool:
    """Stands in for a WorkerPool: records what it is asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[WorkerSpec, str, dict[str, Any]]] = []

    def generate(self, spec: WorkerSpec, prompt: str, **kwargs: Any) -> Reply:
        self.calls.append((spec, prompt, kwargs))
        return Reply("<assistant>Hello there.", True, True)


def _cfg(tmp_path: Path, model: str, *, warm: bool) -> AskConfig:
    return AskConfig(
        models_dir=tmp_path / "models",
        cache_dir=tmp_path / "cache",
        base_model=model,
        family="smollm",
        python=sys.executable,
        warm=warm,
        max_new_tokens=24,
        timeout_s=120.0,
    )


def test_with_warm_asks_the_pool_with_the_settings_and_the_closing_tag(tmp_path: Path) -> None:
    pool = RecordingPool()
    cfg = _cfg(tmp_path, "org/base", warm=True)
    adapter = tmp_path / "adapter"
    messages = ask_messages("alice", "How are you?", [])
    got = answer(Target("v2", "org/base", adapter), messages, cfg, pool)  # type: ignore[arg-type]
    assert got.to_dict() == {
        "text": "Hello there.",
        "model": f"org/base + {adapter}",
        "seconds": got.to_dict()["seconds"],
        "warm": True,
        "stopped": True,
    }
    ((spec, prompt, kwargs),) = pool.calls
    assert spec.key == ("org/base", str(adapter)) and spec.cache_dir == cfg.cache_dir
    assert "How are you?" in prompt
    assert kwargs == {
        "max_new_tokens": 24,
        "stop": ["</assistant"],
        "no_repeat_ngram": NO_REPEAT_NGRAM,
        "timeout": 120.0,
    }


def test_warm_and_one_shot_answers_agree(tmp_path: Path, tiny_model: Path) -> None:
    messages = ask_messages("alice", "Where did you sail last summer?", ["I sailed to Crete."])
    target = Target("base", str(tiny_model))
    cold = answer(target, messages, _cfg(tmp_path, str(tiny_model), warm=False))
    pool = WorkerPool(idle_timeout_s=3600)
    try:
        warm_cfg = _cfg(tmp_path, str(tiny_model), warm=True)
        first = answer(target, messages, warm_cfg, pool)
        second = answer(target, messages, warm_cfg, pool)
        assert len(pool.pids()) == 1
    finally:
        pool.close()
    assert (cold.warm, first.warm, second.warm) == (False, False, True)
    assert cold.text == first.text == second.text
    assert isinstance(cold.stopped, bool) and cold.stopped == first.stopped == second.stopped


def test_the_prompt_renderer_is_kept_while_the_model_is_unchanged(
    tmp_path: Path, tiny_model: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    first = prompt_renderer(None, str(model))
    assert prompt_renderer(None, str(model)) is first
    assert prompt_renderer("smollm", str(model)) is not first  # another family, another key
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the model was replaced
    renewed = prompt_renderer(None, str(model))
    assert renewed is not first
    messages = ask_messages("alice", "How are you?", [])
    assert renewed.render(messages, add_generation_prompt=True) == first.render(
        messages, add_generation_prompt=True
    )
