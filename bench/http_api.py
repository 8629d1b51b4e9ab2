"""The HTTP API's latency and the daemon's idle CPU with a dashboard open.

One run of a real ``personad run`` in a temp dir (one profile of ``--memories`` memories,
ingested and indexed before anything is measured):

1. latency: ``--requests`` sequential ``GET /api/status`` on one keep-alive connection
   (with the bearer token), after 20 warm-up requests; p50, p90, p99 and the mean, and the
   same number of ``status`` calls over the control socket beside them;
2. idle CPU: the daemon's CPU time (utime + stime of its process, /proc) over
   ``--idle-s`` seconds, first with nothing connected, then with one dashboard open in
   headless Chromium (Debian's chromium and chromedriver through Selenium; the page's
   event stream connected), both after the daemon has settled.

    .venv/bin/python bench/http_api.py [--requests 1000] [--idle-s 60] [--memories 50]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from daemon.client import ControlClient  # noqa: E402
from tests.daemon_process import DaemonProcess  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(at(0.90) * 1000, 3),
        "p99_ms": round(at(0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def http_latency(url: str, token: str, n: int) -> dict[str, float]:
    host, port = url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {token}"}

    def one() -> float:
        t = time.perf_counter()
        conn.request("GET", "/api/status", headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - t
        assert response.status == 200, body
        return elapsed

    for _ in range(20):
        one()
    samples = [one() for _ in range(n)]
    conn.close()
    return percentiles(samples)


def socket_latency(d: DaemonProcess, n: int) -> dict[str, float]:
    with ControlClient(d.socket) as client:
        for _ in range(20):
            client.call("status")
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            client.call("status")
            samples.append(time.perf_counter() - t)
    return percentiles(samples)


def idle_cpu(pid: int, seconds: float) -> float:
    c0, w0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    c1, w1 = cpu_seconds(pid), time.monotonic()
    return round(100 * (c1 - c0) / (w1 - w0), 3)


def open_dashboard(url: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.get(url)
    deadline = time.monotonic() + 30
    while driver.find_element("id", "live").text != "live":
        if time.monotonic() > deadline:
            raise SystemExit("the dashboard did not connect its event stream")
        time.sleep(0.1)
    return driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--memories", type=int, default=50)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pd-bench-"))
    d = DaemonProcess(
        root, env={"PERSONAD_TRIGGERS__LORA_SCHEDULE": "", "PERSONAD_TRIGGERS__FULL_SCHEDULE": ""}
    )
    memory = d.profiles_dir / "bench" / "memory"
    memory.mkdir(parents=True)
    (memory / "m.jsonl").write_text(
        "\n".join(
            json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}, with care."})
            for i in range(args.memories)
        )
    )
    driver = None
    try:
        d.start()
        d.wait_for(
            lambda: d.call("status")["profiles"].get("bench", {}).get("indexed") == args.memories
        )
        assert d.proc is not None
        url, token = d.http_url(), d.http_token()
        result: dict[str, Any] = {"requests": args.requests, "memories": args.memories}
        result["http_get_status"] = http_latency(url, token, args.requests)
        result["socket_status"] = socket_latency(d, args.requests)
        time.sleep(3)
        result["idle_s"] = args.idle_s
        result["idle_cpu_pct_no_dashboard"] = idle_cpu(d.proc.pid, args.idle_s)
        driver = open_dashboard(f"{url}?token={token}")
        time.sleep(3)
        result["idle_cpu_pct_one_dashboard"] = idle_cpu(d.proc.pid, args.idle_s)
    finally:
        if driver is not None:
            driver.quit()
        d.stop()
        shutil.rmtree(root, ignore_errors=True)
    h, s = result["http_get_status"], result["socket_status"]
    print(
        f"GET /api/status x{args.requests} (sequential, keep-alive): p50 {h['p50_ms']} ms, "
        f"p90 {h['p90_ms']} ms, p99 {h['p99_ms']} ms, mean {h['mean_ms']} ms"
    )
    print(f"socket status x{args.requests}: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms")
    print(
        f"idle CPU over {args.idle_s:.0f} s: {result['idle_cpu_pct_no_dashboard']}% without a "
        f"dashboard, {result['idle_cpu_pct_one_dashboard']}% with one dashboard open"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
