"""Who answers a question: the active version, the base model, Ollama or a local child."""

from __future__ import annotations

from pathlib import Path

from services.ask import Target, targets


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
