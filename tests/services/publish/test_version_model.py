"""LocalRegistry.version_model: what any published version answers with."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.publish import LocalRegistry, PublishError
from tests.services.publish.publish_helpers import write_adapter, write_full_model


def test_version_model_of_a_lora_and_a_full_version(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "models")
    registry.publish("alice", 1, write_adapter(tmp_path / "a1"), kind="lora", base="base-spec")
    registry.publish("alice", 2, write_full_model(tmp_path / "m2"), kind="full")
    registry.activate("alice", 1)
    v1, v2 = (tmp_path / "models" / "alice" / v for v in ("v1", "v2"))
    assert registry.version_model("alice", 1) == ("base-spec", v1 / "adapter")
    assert registry.version_model("alice", 2) == (str(v2 / "model"), None)
    # The active version's is what serving_model gives.
    assert registry.serving_model("alice", "other") == registry.version_model("alice", 1)
    with pytest.raises(PublishError, match="no version v3"):
        registry.version_model("alice", 3)
    (v1 / "base.json").write_text("not json")
    with pytest.raises(PublishError, match=r"cannot read base\.json"):
        registry.version_model("alice", 1)
