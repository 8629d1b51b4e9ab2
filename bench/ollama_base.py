"""What an ``ollama:NAME`` base model costs: finding its GGUF (Ollama's ``show`` plus the
manifest in its store), planning from the GGUF's header, the one conversion, and every
later resolution, which reuses the conversion keyed by the blob's digest, set beside what
hashing the blob (the key of a ``.gguf`` path) would cost each time.

With ``--model NAME`` it asks the Ollama server of ``$OLLAMA_HOST`` (or ``ollama.url``) for
an installed model; without, a stand-in server (``tests/fakes/ollama_server.py``) holding
SmolLM2-135M-Instruct's Q4_1 GGUF (``embedded:smollm2``) in a store laid out as Ollama's.

    .venv/bin/python bench/ollama_base.py [--model NAME] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.training.base_model import embedded_path, file_sha256, resolve_base_model  # noqa: E402
from services.training.model_shape import model_shape  # noqa: E402
from services.training.ollama_base import ollama_base  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(spec: str, cache_dir: Path) -> None:
    base, found_s = timed(lambda: ollama_base(spec))
    print(f"{spec}: {base.blob} ({base.size / 2**20:.0f} MiB, {base.quantization or '?'})")
    print(f"  found (show + manifest + size):   {found_s * 1000:8.1f} ms")
    shape, shape_s = timed(lambda: model_shape(base.blob))
    print(
        f"  planned from the GGUF header:     {shape_s:8.2f} s  ({shape.params / 1e6:.0f}M params)"
    )
    out, first_s = timed(lambda: resolve_base_model(spec, cache_dir))
    print(f"  first resolution (conversion):    {first_s:8.2f} s  -> {out.name}")
    _, again_s = timed(lambda: resolve_base_model(spec, cache_dir))
    print(f"  later resolution (reused):        {again_s:8.2f} s")
    _, hash_s = timed(lambda: file_sha256(base.blob))
    print(f"  sha256 of the blob (not done):    {hash_s:8.2f} s")
    if base.warning:
        print(f"  warning: {base.warning}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an Ollama model installed on $OLLAMA_HOST")
    parser.add_argument("--cache-dir", type=Path, help="base-model cache (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ollama-base-") as tmp:
        cache = args.cache_dir or Path(tmp) / "base-models"
        if args.model:
            measure(f"ollama:{args.model}", cache)
            return 0
        from tests.fakes.ollama_server import FakeOllama

        with FakeOllama() as fake:
            name = "smollm2:135m-instruct-q4_1"
            gguf = embedded_path("smollm2")
            fake.add_model(name, weights_file=gguf, quantization_level="Q4_1")
            os.environ["OLLAMA_HOST"] = fake.url
            print(f"stand-in Ollama at {fake.url}, store {fake.models_dir}")
            measure(f"ollama:{name}", cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
