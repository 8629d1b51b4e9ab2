"""training.backend = "ray" against a real local Ray cluster (`ray start --head`): a LoRA
job submitted, followed and published; a second one cancelled (stop_job); the daemon
SIGKILLed mid-job and started again re-attaches to the job and publishes it exactly
once; a cluster that does not share the state directory stops start-up with the reason."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chroma_server import free_port
from tests.daemon_process import DaemonProcess
from tests.ray_cluster import RayHead

TRAIN_CONFIG: dict[str, Any] = {
    "max_steps": 400,
    "num_epochs": 1,
    "batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_seq_length": 128,
    "gate": {
        "min_improvement": -0.99,
        "max_regression": 10,
        "probe_tokens": 0,
        "fidelity_probes": 0,
    },
}


ACTIVE = ("queued", "running")
# Retrain on every sample, long enough to be caught mid-run.
LONG_JOB = {"profile": "alice", "all": True, "force": True, "config": {"num_epochs": 30}}


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    temp = Path(tempfile.mkdtemp(prefix="ray-"))
    head = RayHead(temp / "t").start()
    yield head
    head.stop()
    shutil.rmtree(temp, ignore_errors=True)


def _daemon(root: Path, address: str, tiny_model: Path) -> DaemonProcess:
    d = DaemonProcess(
        root,
        env={
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "PERSONAD_TRAINING__BACKEND": "ray",
            "PERSONAD_TRAINING__RAY_ADDRESS": address,
            "PERSONAD_TRAINING__BASE_MODEL": str(tiny_model),
            "PERSONAD_TRAINING__FAMILY": "smollm",
            "PERSONAD_TRAINING__DEVICE": "cpu",
            "PERSONAD_TRAINING__CONFIG": json.dumps(TRAIN_CONFIG),
            "PERSONAD_TRIGGERS__LORA_THRESHOLD": "1000000",
            "PERSONAD_TRIGGERS__LORA_SCHEDULE": "",
            "PERSONAD_TRIGGERS__FULL_SCHEDULE": "",
            "PERSONAD_TRIGGERS__LORA_MIN_SAMPLES": "4",
        },
    )
    mem = d.profiles_dir / "alice" / "memory"
    mem.mkdir(parents=True)
    (mem / "pc.jsonl").write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"What colour is thing {i}?",
                    "completion": f"Thing {i} is blue, said with care.",
                    "quality_score": 9,
                }
            )
            for i in range(16)
        )
    )
    return d


def _job(d: DaemonProcess, job_id: int) -> dict[str, Any]:
    return next(j for j in d.call("jobs")["jobs"] if j["id"] == job_id)


def _ray_jobs(head: RayHead, job_id: int) -> list[Any]:
    return [
        j
        for j in head.client().list_jobs()
        if (j.submission_id or "").startswith(f"personad-alice-job{job_id}-")
    ]


def test_jobs_on_a_ray_cluster(short_tmp: Path, ray_head: RayHead, tiny_model: Path) -> None:
    d = _daemon(short_tmp, ray_head.address, tiny_model).start(timeout=240)
    try:
        d.wait_for(lambda: d.call("status")["profiles"].get("alice", {}).get("eligible_samples"))
        # 1. Submitted, followed (progress from the shared run directory), published.
        first = d.call("train", {"profile": "alice", "force": True})["job"]["id"]
        seen_steps = d.wait_for(lambda: (_job(d, first).get("progress") or {}).get("step"), 300)
        assert seen_steps >= 1
        done = d.wait_for(
            lambda: (j := _job(d, first))["state"] not in ("queued", "running") and j, 300
        )
        assert done["state"] == "succeeded", done
        assert done["reason"] == "published v1"
        (ray_job,) = _ray_jobs(ray_head, first)
        assert ray_job.status == "SUCCEEDED"
        # 2. Cancelled: the Ray job is stopped.
        second = d.call("train", LONG_JOB)["job"]["id"]
        d.wait_for(lambda: (_job(d, second).get("progress") or {}).get("step"), 300)
        d.call("cancel", {"job": second})
        d.wait_for(lambda: _job(d, second)["state"] == "cancelled", 120)
        (ray_job,) = _ray_jobs(ray_head, second)
        assert ray_job.status == "STOPPED"
        # 3. The daemon SIGKILLed mid-job: the job runs on; the restart re-attaches.
        third = d.call("train", {**LONG_JOB, "config": {"num_epochs": 12}})["job"]["id"]
        d.wait_for(lambda: (_job(d, third).get("progress") or {}).get("step"), 300)
        d.kill()
        (ray_job,) = _ray_jobs(ray_head, third)
        assert ray_job.status == "RUNNING"  # the job runs on without the daemon
        d.start(timeout=240)
        done = d.wait_for(lambda: (j := _job(d, third))["state"] not in ACTIVE and j, 300)
        assert done["state"] == "succeeded", done
        assert done["reason"] == "published v2"
        assert len(_ray_jobs(ray_head, third)) == 1  # never submitted again
        versions = d.call("versions", {"profile": "alice"})["versions"]
        assert sorted(v["version"] for v in versions) == [1, 2]  # published exactly once
        assert [j["id"] for j in d.call("jobs")["jobs"] if j.get("retry_of")] == []
    finally:
        d.stop()


def test_a_cluster_without_the_state_directory_stops_start_up(
    short_tmp: Path, ray_head: RayHead, tiny_model: Path
) -> None:
    d = _daemon(short_tmp, ray_head.address, tiny_model)
    d.env["PERSONAD_TRAINING__PYTHON"] = str(short_tmp / "no-such-python")
    done = d.cli("run", timeout=240)
    assert done.returncode != 0
    assert f"the Ray cluster at {ray_head.address} does not share this daemon's storage" in (
        done.stderr
    )


def test_an_unreachable_ray_head_stops_start_up(short_tmp: Path, tiny_model: Path) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    done = _daemon(short_tmp, address, tiny_model).cli("run", timeout=120)
    assert done.returncode != 0
    assert f"cannot reach the Ray job server at {address}" in done.stderr
