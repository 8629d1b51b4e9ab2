"""The HTTP API of a real daemon: the socket's commands over HTTP, its token, origin and
Host checks, its event stream, and a start that a busy port does not stop."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.commands import Commands
from tests.daemon.http_client import Api
from tests.daemon_process import DaemonProcess

HERE = Path(__file__).resolve().parent


def _memories(path: Path, n: int, start: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"Question {i}?",
                    "completion": f"Answer {i}, said with care.",
                    "quality_score": 9,
                }
            )
            for i in range(start, start + n)
        )
    )


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    root = Path(tempfile.mkdtemp(prefix="pd-"))
    python = root / "fake-python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_trainer.py"}" "$@"\n')
    python.chmod(0o755)
    d = DaemonProcess(
        root,
        env={
            "FAKE_TRAINER": "ok",
            "PERSONAD_TRAINING__PYTHON": str(python),
            "PERSONAD_TRAINING__FAMILY": "smollm",
            "FAKE_TRAINER_STEP_S": "0.5",  # a job runs long enough to be seen running
        },
    )
    _memories(d.profiles_dir / "alice" / "memory" / "first.jsonl", 12)
    d.start()
    try:
        # Ingested and indexed: the status the tests compare no longer changes by itself.
        d.wait_for(
            lambda: (
                {
                    k: d.call("status")["profiles"].get("alice", {}).get(k)
                    for k in ("memories", "indexed")
                }
                == {"memories": 12, "indexed": 12}
            )
        )
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def api(daemon: DaemonProcess) -> Api:
    return Api(daemon.http_url(), daemon.http_token())


def test_the_token_is_private_and_dashboard_prints_the_url_with_it(
    daemon: DaemonProcess, api: Api
) -> None:
    token_file = daemon.state_dir / "http-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(api.token) >= 32
    done = daemon.cli("dashboard")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{api.url}?token={api.token}"


def test_every_request_without_the_token_is_refused(api: Api) -> None:
    for method, path in (
        ("GET", "/"),
        ("GET", "/api/status"),
        ("GET", "/api/events"),
        ("GET", "/api/openapi.json"),
        ("GET", "/static/dashboard.js"),
        ("POST", "/api/pause"),
    ):
        for token in (None, "not-the-token-" * 3):
            answer = api.request(method, path, {} if method == "POST" else None, token=token)
            assert answer.status == 401, (method, path, answer.body)
            assert answer.headers["www-authenticate"].startswith("Bearer")
    assert api.get("/api/status", token=None).json()["error"]["code"] == "unauthorized"
    assert b"personad dashboard" in api.get("/", token=None).body
    # Wrong token in the dashboard link: still refused.
    assert api.get("/?token=" + "x" * 43, token=None).status == 401


def test_get_status_answers_what_status_json_prints(daemon: DaemonProcess, api: Api) -> None:
    over_http = api.get("/api/status").json()
    printed = daemon.cli_json("status")
    assert over_http.keys() == printed.keys()
    assert over_http["profiles"] == printed["profiles"]
    for volatile in ("uptime_s", "ingest"):
        over_http["daemon"].pop(volatile)
        printed["daemon"].pop(volatile)
    assert over_http["daemon"] == printed["daemon"]
    assert over_http["daemon"]["http"]["url"] == api.url
    assert api.get("/api/profiles").json() == {"profiles": printed["profiles"]}


def test_every_socket_command_is_an_endpoint(api: Api) -> None:
    commands = set(Commands(None).handlers())  # type: ignore[arg-type]
    paths = api.get("/api/openapi.json").json()["paths"]
    served = {p.removeprefix("/api/") for p in paths} - {"events", "profiles"}
    # Every command but the one that hands out the token.
    assert served == commands - {"dashboard"}
    assert set(paths["/api/status"]) == {"get", "post"}
    assert set(paths["/api/train"]) == {"post"}
    assert api.post("/api/ping").json()["pong"] is True
    assert api.get("/api/ping").json()["pong"] is True
    assert api.get("/api/dashboard").status == 404
    hits = api.get("/api/search?profile=alice&query=Answer+3&k=2").json()["results"]
    assert len(hits) == 2 and any("Answer 3" in h["text"] for h in hits)


def test_commands_added_to_the_socket_are_served_too(daemon: DaemonProcess, api: Api) -> None:
    paths = api.get("/api/openapi.json").json()["paths"]
    assert set(paths["/api/stats"]) == {"get", "post"}
    assert set(paths["/api/remember"]) == {"post"}
    assert api.get("/api/stats?profile=alice").json() == daemon.cli_json("stats", "alice")
    before = daemon.call("status")["profiles"]["alice"]["memories"]
    pair = {"profile": "alice", "prompt": "Where did you grow up?", "completion": "By the sea."}
    assert api.post("/api/remember", pair).status == 200
    daemon.wait_for(
        lambda: daemon.call("status")["profiles"]["alice"]["memories"] == before + 1, 30
    )


def test_errors_carry_the_socket_codes_with_http_statuses(api: Api) -> None:
    cases = [
        (api.get("/api/versions?profile=nobody"), 404, "unknown_profile"),
        (api.post("/api/search", {"profile": "alice", "query": "x", "k": 0}), 400, "bad_args"),
        (api.post("/api/cancel", {"job": 999}), 404, "unknown_job"),
        (api.post("/api/no-such-command"), 404, "unknown_command"),
        (api.post("/api/status", b"{not json"), 400, "bad_request"),
        (api.post("/api/status", [1, 2]), 400, "bad_request"),
        (api.get("/api/train?profile=alice"), 405, "method_not_allowed"),
        (api.post("/api/rollback", {"profile": "alice"}), 409, "rollback_failed"),
    ]
    for answer, status, code in cases:
        assert (answer.status, answer.json()["error"]["code"]) == (status, code), answer.body
    # A base model naming nothing is refused with the reason, nothing queued.
    before = api.get("/api/jobs").json()
    refused = api.post("/api/train", {"profile": "alice", "base_model": "/no/such/model"})
    assert refused.status == 400 and refused.json()["error"]["code"] == "bad_args"
    assert "'/no/such/model': no such file or directory" in refused.json()["error"]["message"]
    assert api.get("/api/jobs").json() == before


def test_state_changing_requests_need_the_same_origin(daemon: DaemonProcess, api: Api) -> None:
    own = api.url.rstrip("/")
    cookie = {"Cookie": f"personad_token_{api.port}={api.token}"}
    refused = [
        api.post("/api/pause", headers={"Origin": "http://evil.example"}),
        api.post("/api/pause", headers={"Sec-Fetch-Site": "cross-site"}),
        api.post("/api/pause", token=None, headers=cookie),  # a cookie alone, no Origin
        api.post("/api/pause", token=None, headers={**cookie, "Origin": "null"}),
    ]
    assert [(a.status, a.json()["error"]["code"]) for a in refused] == [(403, "cross_origin")] * 4
    assert daemon.call("status")["daemon"]["paused"] is False
    # The dashboard's own requests (cookie + same Origin) and programs (bearer) pass.
    mine = api.post("/api/pause", token=None, headers={**cookie, "Origin": own})
    assert mine.status == 200 and daemon.call("status")["daemon"]["paused"] is True
    assert api.post("/api/resume").status == 200
    assert daemon.call("status")["daemon"]["paused"] is False
    # Reading with the cookie needs no Origin.
    assert api.get("/api/status", token=None, headers=cookie).status == 200


def test_the_host_header_must_name_this_server(api: Api) -> None:
    for host in ("evil.example", f"evil.example:{api.port}", f"127.0.0.2:{api.port}"):
        answer = api.get("/api/status", headers={"Host": host})
        assert (answer.status, answer.json()["error"]["code"]) == (403, "bad_host"), host
    assert api.get("/api/status", headers={"Host": f"localhost:{api.port}"}).status == 200


def test_the_dashboard_link_sets_a_strict_cookie(api: Api) -> None:
    answer = api.get(f"/?token={api.token}", token=None)
    assert answer.status == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    assert f"personad_token_{api.port}={api.token}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = api.get("/", token=None, headers={"Cookie": cookie.split(";")[0]})
    assert page.status == 200 and b"<title>personad</title>" in page.body


def test_events_bring_ingest_counts_and_job_progress(daemon: DaemonProcess, api: Api) -> None:
    stream = api.events()
    try:
        assert stream.content_type.startswith("text/event-stream")
        before = daemon.call("status")["profiles"]["alice"]["memories"]
        _, first = stream.until(lambda name, data: name == "counts", 10)
        assert first["profiles"]["alice"]["memories"] == before
        _memories(daemon.profiles_dir / "alice" / "memory" / "more.jsonl", 3, start=100)
        seconds, _ = stream.until(
            lambda name, data: (
                name == "counts" and data["profiles"]["alice"]["memories"] == before + 3
            ),
            10,
        )
        assert seconds < 5
        job = api.post("/api/train", {"profile": "alice"}).json()["job"]
        _, progress = stream.until(
            lambda name, data: (
                name == "progress" and any(j["id"] == job["id"] for j in data["jobs"])
            ),
            10,
        )
        assert progress["jobs"][0]["profile"] == "alice"
    finally:
        stream.close()
    daemon.wait_for(lambda: daemon.call("jobs")["jobs"][0]["state"] != "running")
    [run] = [j for j in daemon.call("jobs")["jobs"] if j["id"] == job["id"]]
    info = api.get(f"/api/run_info?job={job['id']}").json()
    assert info["train_loss"][-1] == [4, 0.5] and info["eval_loss"] == [[4, 0.5]]
    assert info["gate"] == {"passed": True, "reason": "improved"}, run
    assert api.get("/api/run_info?job=999").status == 404


def _busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def test_a_busy_port_does_not_stop_the_daemon(short_tmp: Path) -> None:
    busy = _busy_port()
    port = busy.getsockname()[1]
    d = DaemonProcess(short_tmp, env={"PERSONAD_HTTP__LISTEN": f"127.0.0.1:{port}"})
    try:
        started = time.monotonic()
        d.start()
        http = d.wait_for(
            lambda: (
                d.call("status")["daemon"]["http"]["error"] and d.call("status")["daemon"]["http"]
            ),
            30,
        )
        assert http["url"] is None and "in use" in http["error"], http
        assert time.monotonic() - started < 60
        done = d.cli("dashboard")
        assert done.returncode == 1 and "in use" in done.stderr
    finally:
        assert d.stop() == 0
        busy.close()


def test_http_off_serves_nothing(short_tmp: Path) -> None:
    d = DaemonProcess(short_tmp, env={"PERSONAD_HTTP__ENABLED": "false"})
    try:
        d.start()
        assert d.call("status")["daemon"]["http"] is None
        assert not (d.state_dir / "http-token").exists()
        done = d.cli("dashboard")
        assert done.returncode == 1 and "http.enabled = false" in done.stderr
    finally:
        assert d.stop() == 0
