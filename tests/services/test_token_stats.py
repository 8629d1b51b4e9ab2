"""Token statistics of a dataset by the base model's own tokenizer (tokenizers, no torch)."""

from __future__ import annotations

from pathlib import Path

from services.token_stats import ESTIMATE, token_counter, token_stats


def _line(i: int, text: str, kind: str = "chat") -> dict[str, str]:
    return {"id": f"m{i}", "kind": kind, "text": text, "completion": text}


def test_counts_with_the_models_own_tokenizer(tiny_model: Path, tiny_tokenizer: object) -> None:
    counter = token_counter(tiny_model)
    assert counter.source == str(tiny_model / "tokenizer.json")
    texts = ["hello", "hello world, the question and the answer.", "a " * 40]
    stats, warnings = token_stats([_line(i, t) for i, t in enumerate(texts)], counter, (700, 2000))
    expected = [len(tiny_tokenizer.encode(t, add_special_tokens=False)) for t in texts]  # type: ignore[attr-defined]
    assert (stats["min"], stats["max"]) == (min(expected), max(expected))
    assert stats["avg"] == round(sum(expected) / 3, 1)
    assert stats["samples"] == 3 and warnings == []


def test_without_a_tokenizer_the_estimate_says_so(tmp_path: Path) -> None:
    counter = token_counter(tmp_path / "model.gguf", tmp_path / "cache")
    assert counter.source == ESTIMATE
    prose = " ".join(["word"] * 300)  # 400 tokens by the estimate: below 700
    chunk = " ".join(["word"] * 900)  # 1200: inside
    stats, warnings = token_stats(
        [
            _line(1, "short answer"),
            _line(2, prose, "continuation"),
            _line(3, chunk, "continuation"),
        ],
        counter,
        (700, 2000),
    )
    assert (stats["min"], stats["max"], stats["prose_outside"]) == (3, 1200, 1)
    assert warnings == ["1 prose chunk(s) outside 700-2000 tokens: m2 (400)"]


def test_a_converted_gguf_uses_its_tokenizer(tmp_path: Path, tiny_model: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "model-0123456789ab").mkdir(parents=True)
    (cache / "model-0123456789ab" / "tokenizer.json").write_bytes(
        (tiny_model / "tokenizer.json").read_bytes()
    )
    counter = token_counter(tmp_path / "model.gguf", cache)
    assert counter.source == str(cache / "model-0123456789ab" / "tokenizer.json")
    assert counter.count("hello world") > 0
