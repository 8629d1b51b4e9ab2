"""What downloading a hub base costs on top of the transfer itself, over loopback from the
stand-in hub (``tests/fakes/hf_hub.py``; nothing reaches the real hub): a repo of
``config.json`` and a ``--mb`` MB ``model.safetensors``.

- ``personad``: ``services.training.hub_download.download`` (the weights fetched resumably
  through ``blobs/<sha256>.partial`` with a sha256 check, then ``snapshot_download`` links
  them), in seconds and MB/s;
- ``snapshot_download``: huggingface_hub alone, the same files, into another cache;
- ``resumed``: the same download stopped at half (the hub cuts the connection once) and
  continued with a ``Range`` request: seconds, and the bytes fetched twice (0 when it
  resumes from the partial file).

    .venv/bin/python bench/hub_download.py [--mb 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(name, None)
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="bench-hf-home-")

from services.training.hub_download import ALLOW, download  # noqa: E402
from tests.fakes.hf_hub import FakeHub, Repo  # noqa: E402


def timed(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mb", type=int, default=256)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    weights = os.urandom(args.mb * 1_000_000)
    config = b'{"model_type": "llama", "hidden_size": 64}'
    hub = FakeHub(
        {"acme/big": Repo({"config.json": config, "model.safetensors": weights}, "b" * 40)}
    )
    hub.start()
    os.environ["HF_ENDPOINT"] = hub.url
    from huggingface_hub import snapshot_download

    def ours() -> None:
        download("acme/big", Path(tempfile.mkdtemp(prefix="bench-ours-")))

    def theirs() -> None:
        cache = tempfile.mkdtemp(prefix="bench-hf-")
        snapshot_download("acme/big", cache_dir=cache, endpoint=hub.url, allow_patterns=ALLOW)

    def resumed() -> None:
        hub.drop_once.add("model.safetensors")
        hub.dropped.clear()
        ours()

    size = len(weights) / 1e6
    t_ours, t_theirs = timed(ours, args.runs), timed(theirs, args.runs)
    hub.requests.clear()
    t_resumed = timed(resumed, 1)
    ranges = hub.ranges("model.safetensors")
    start = int(ranges[0].removeprefix("bytes=").split("-")[0]) if ranges else 0
    sent_twice = len(weights) // 2 - start if ranges else len(weights) // 2
    print(f"weights: {size:.0f} MB over loopback, median of {args.runs} runs")
    print(f"personad download:   {t_ours:6.2f} s  {size / t_ours:7.0f} MB/s")
    print(f"snapshot_download:   {t_theirs:6.2f} s  {size / t_theirs:7.0f} MB/s")
    print(f"cut at half, resumed: {t_resumed:5.2f} s  range {ranges}")
    print(f"bytes fetched twice: {sent_twice}")
    hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
