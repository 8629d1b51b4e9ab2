"""Fuzzing the memory parsers and the control socket of a real daemon.

:func:`run_fuzz` runs every experiment and returns their figures: generated files through
``parse_bytes`` and through a daemon's watched folder, generated request sessions on the
control socket, and connection storms. The tests call the parts (:func:`fuzz_parsers`,
:func:`fuzz_daemon_folder`, :func:`fuzz_socket`, :func:`connection_storm`) with small
sizes and ``strict=True``, so that Hypothesis shrinks a failing input and shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed

from daemon.client import ClientError
from services.memories import FORMATS, parse_bytes
from tests.daemon_process import DaemonProcess
from tests.fakes.ollama_server import FakeOllama
from tests.reliability.crash import EMBED_MODEL
from tests.reliability.crash_checks import ro_connect
from tests.reliability.fuzz_inputs import (
    KNOWN_COMMANDS,
    Session,
    memory_files,
    sessions,
)

PROFILE = "fuzz"
MAX_LINE_BYTES = 65536
_SHA256 = re.compile(r"[0-9a-f]{64}")
_INTERNAL = "internal error while parsing"
_VIOLATIONS_KEPT = 20


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def _short(data: bytes | str, limit: int = 160) -> str:
    text = repr(data)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(data)} long)"


# ---- parsers -------------------------------------------------------------------------


@dataclass
class ParseCheck:
    memories: int
    problems: int
    seconds: float
    violations: list[str]


def check_parse(name: str, data: bytes) -> ParseCheck:
    """Parse one file's bytes and list every broken promise of ``parse_bytes``: it never
    raises, every problem has a reason, every memory has text, a sha256 id and a
    storable record, and a file yields memories or at least one problem."""
    started = time.perf_counter()
    try:
        result = parse_bytes(name, data)
    except Exception as exc:  # the contract says this cannot happen
        return ParseCheck(
            0, 0, time.perf_counter() - started, [f"parse_bytes raised {type(exc).__name__}: {exc}"]
        )
    seconds = time.perf_counter() - started
    violations = []
    for problem in result.problems:
        if not problem.reason.strip():
            violations.append(f"a problem without a reason (locator {problem.locator!r})")
        elif _INTERNAL in problem.reason:
            violations.append(f"the parser crashed: {problem.reason}")
    for memory in result.memories:
        where = f"memory at {memory.locator or 'file'}"
        if not _SHA256.fullmatch(memory.id):
            violations.append(f"{where}: id {memory.id!r} is not a sha256 hex digest")
        if not memory.text.strip():
            violations.append(f"{where}: empty text")
        if memory.format not in FORMATS:
            violations.append(f"{where}: unknown format {memory.format!r}")
        try:
            json.dumps(memory.to_record(), ensure_ascii=False).encode("utf-8")
        except (ValueError, TypeError, RecursionError) as exc:
            violations.append(f"{where}: the record cannot be stored ({exc})")
    if not result.memories and not result.problems:
        violations.append("neither memories nor a problem")
    return ParseCheck(len(result.memories), len(result.problems), seconds, violations)


def fuzz_parsers(examples: int, seed: int, *, strict: bool = False) -> dict[str, Any]:
    """Feed ``examples`` generated files to ``parse_bytes``; figures of what came back."""
    figures: Counter[str] = Counter()
    by_extension: Counter[str] = Counter()
    violations: list[str] = []
    slowest = (0.0, "")

    @hypothesis_seed(seed)
    @_settings(examples)
    @given(memory_files())
    def run(file: tuple[str, bytes]) -> None:
        nonlocal slowest
        name, data = file
        check = check_parse(name, data)
        figures["inputs"] += 1
        figures["bytes"] += len(data)
        figures["memories"] += check.memories
        figures["problems"] += check.problems
        figures["files_with_memories"] += bool(check.memories)
        figures["files_rejected"] += not check.memories
        by_extension[PurePath(name).suffix.lower() or "(none)"] += 1
        if check.seconds > slowest[0]:
            slowest = (check.seconds, f"{_short(name, 60)} ({len(data)} bytes)")
        if check.violations:
            figures["crashes"] += any("crash" in v or "raised" in v for v in check.violations)
            figures["violating_inputs"] += 1
            if len(violations) < _VIOLATIONS_KEPT:
                violations.append(f"{name} {_short(data)}: {'; '.join(check.violations)}")
            if strict:
                raise AssertionError("; ".join(check.violations))

    run()
    return {
        "inputs": figures["inputs"],
        "bytes": figures["bytes"],
        "memories": figures["memories"],
        "problems": figures["problems"],
        "files_with_memories": figures["files_with_memories"],
        "files_rejected": figures["files_rejected"],
        "crashes": figures["crashes"],
        "violating_inputs": figures["violating_inputs"],
        "violations": violations,
        "by_extension": dict(sorted(by_extension.items())),
        "slowest_s": round(slowest[0], 4),
        "slowest_input": slowest[1],
    }


def sample_files(count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` generated memory files, the same ones for the same seed."""
    files: list[tuple[str, bytes]] = []

    @hypothesis_seed(seed)
    @_settings(count)
    @given(memory_files())
    def collect(file: tuple[str, bytes]) -> None:
        files.append(file)

    collect()
    return files[:count]


# ---- daemons --------------------------------------------------------------------------


def short_root(root: Path) -> Path:
    """A directory for a daemon whose socket path fits in a sockaddr_un (107 bytes)."""
    if len(str(root / "run" / "personad.sock")) <= 100:
        root.mkdir(parents=True, exist_ok=True)
        return root
    return Path(tempfile.mkdtemp(prefix="pdfz-"))


@contextlib.contextmanager
def fuzz_daemon(
    root: Path, env: dict[str, str] | None = None, *, indexed: bool = False
) -> Iterator[DaemonProcess]:
    """A real daemon with hash embeddings (FakeOllama), no training triggers and a quick
    ingest; stopped (and its exit status checked) on the way out. ``indexed``: the fake
    has the embedding model, so memories reach the index (else they stay queued for it)."""
    base = short_root(root)
    models = {EMBED_MODEL: {"capabilities": ["embedding"], "embedding_length": 32}}
    with FakeOllama(models=models if indexed else ()) as fake:
        daemon = DaemonProcess(
            base,
            env={
                "PERSONAD_INDEX__EMBEDDING_PROVIDER": "ollama",
                "PERSONAD_INDEX__EMBEDDING_MODEL": EMBED_MODEL,
                "PERSONAD_OLLAMA__URL": fake.url,
                "PERSONAD_TRIGGERS__LORA_THRESHOLD": "1000000",
                "PERSONAD_TRIGGERS__LORA_SCHEDULE": "",
                "PERSONAD_TRIGGERS__FULL_SCHEDULE": "",
                "PERSONAD_INGEST__SETTLE_S": "0.5",
                "PERSONAD_SOCKET__READ_TIMEOUT_S": "5",
                **(env or {}),
            },
        )
        daemon.start()
        try:
            yield daemon
        finally:
            daemon.stop()
            if base != root:
                shutil.rmtree(base, ignore_errors=True)


def alive(daemon: DaemonProcess) -> bool:
    """The process runs and answers ping."""
    if daemon.proc is None or daemon.proc.poll() is not None:
        return False
    try:
        return bool(daemon.call("ping", timeout=10)["pong"])
    except ClientError:
        return False


# ---- files in a real daemon's folder -------------------------------------------------


def _ledger_files(daemon: DaemonProcess) -> dict[str, tuple[int, int]]:
    """Basename -> (memories, problems) of every file the daemon's ledger recorded."""
    path = daemon.state_dir / "ledger.sqlite3"
    if not path.exists():
        return {}
    with contextlib.closing(ro_connect(path)) as db:
        try:
            rows = db.execute(
                "SELECT path, memories, problems FROM files WHERE profile = ?", [PROFILE]
            ).fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return {}
    return {Path(p).name: (m, n) for p, m, n in rows}


def fuzz_daemon_folder(
    daemon: DaemonProcess, files: list[tuple[str, bytes]], *, strict: bool = False
) -> dict[str, Any]:
    """Drop ``files`` (renamed into place) into the daemon's watched folder and check that
    each ends with memories or with rejects listed by the ``rejects`` command, in the
    numbers ``parse_bytes`` gives, and that the daemon lives on."""
    folder = daemon.profiles_dir / PROFILE / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, tuple[int, int]] = {}
    for number, (name, data) in enumerate(files):
        final = f"fz{number:05d}{PurePath(name).suffix}"
        check = check_parse(final, data)
        expected[final] = (check.memories, check.problems)
        staging = folder / f".{final}.part"
        staging.write_bytes(data)
        os.replace(staging, folder / final)
    deadline = time.monotonic() + 60 + 0.5 * len(files)
    seen = _ledger_files(daemon)
    while set(expected) - set(seen) and time.monotonic() < deadline:
        if daemon.proc is None or daemon.proc.poll() is not None:
            break
        time.sleep(0.2)
        seen = _ledger_files(daemon)
    is_alive = alive(daemon)
    rejects = (
        daemon.call("rejects", {"profile": PROFILE, "limit": 10_000})["rejects"] if is_alive else []
    )
    listed = Counter(Path(r["path"]).name for r in rejects)
    complete = len(rejects) < 10_000  # else the list was cut short
    violations = []
    for name, (memories, problems) in sorted(expected.items()):
        if name not in seen:
            violations.append(f"{name}: never recorded by the daemon")
            continue
        if seen[name] != (memories, problems):
            violations.append(
                f"{name}: daemon recorded {seen[name]} (memories, problems), "
                f"parse_bytes gives {(memories, problems)}"
            )
        if complete and listed[name] != problems:
            violations.append(f"{name}: `rejects` lists {listed[name]}, not {problems}")
        if complete and not seen[name][0] and not listed[name]:
            violations.append(f"{name}: no memories and no reject listed by `rejects`")
    if not is_alive:
        violations.append(f"the daemon died:\n{daemon.log()[-3000:]}")
    if strict and violations:
        raise AssertionError("\n".join(violations[:_VIOLATIONS_KEPT]))
    return {
        "files": len(files),
        "recorded": len(set(expected) & set(seen)),
        "files_with_memories": sum(1 for n in expected if seen.get(n, (0, 0))[0]),
        "files_with_rejects": sum(1 for n in expected if listed[n]),
        "memories": sum(seen.get(n, (0, 0))[0] for n in expected),
        "rejects_listed": sum(listed[n] for n in expected),
        "violations": violations[:_VIOLATIONS_KEPT],
        "daemon_alive": is_alive,
    }


# ---- the control socket --------------------------------------------------------------


class _Lines:
    """Reads answer lines from a socket; None once the daemon closed it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.closed = False

    def read(self) -> bytes | None:
        while b"\n" not in self.buf:
            if self.closed:
                return None
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                continue
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


def _send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send while the caller reads, so that neither side's buffers fill up and stall."""

    def send() -> None:
        with contextlib.suppress(OSError):  # the daemon may close on a bad line
            sock.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _decode(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return _UNREADABLE


_UNREADABLE = object()


def expected_code(line: bytes) -> str | None:
    """The error code the protocol promises for a request line, or None where the command
    decides (a known command: any answer but an internal error)."""
    request = _decode(line)
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        return "bad_request"
    if not isinstance(request.get("args") or {}, dict):
        return "bad_request"
    if request["cmd"] not in KNOWN_COMMANDS:
        return "unknown_command"
    return None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# A line nested this deeply may be beyond what the daemon can decode (its stack is deeper
# than a test's): then it cannot know the id, and a bad_request with a null id is right.
DEEP = 500


def nesting(line: bytes) -> int:
    """How deeply the JSON arrays and objects of a line nest (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


@contextlib.contextmanager
def deeper_stack(limit: int = 5_000) -> Iterator[None]:
    """Room for the checks' own JSON calls on ids the daemon (deeper in its stack than a
    test) could still read and echo."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def check_answer(line: bytes, answer: bytes | None) -> list[str]:
    """What is wrong with the daemon's answer to one request line."""
    with deeper_stack():
        return _check_answer(line, answer)


def _check_answer(line: bytes, answer: bytes | None) -> list[str]:
    if answer is None:
        return [f"no answer to {_short(line)}"]
    try:
        body = json.loads(answer)
    except ValueError:
        return [f"answer is not JSON: {_short(answer)}"]
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        return [f"answer without ok: {_short(answer)}"]
    error = body.get("error")
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    if not body["ok"] and (
        not isinstance(code, str) or not code or not isinstance(error.get("message"), str)
    ):
        return [f"error answer without code and message: {_short(answer)}"]
    if code == "internal":
        return [f"a command crashed on {_short(line)}: {error['message']}"]
    request = _decode(line)
    want_id = request.get("id") if isinstance(request, dict) else None
    want = expected_code(line)
    if code == "bad_request" and body.get("id") is None and nesting(line) > DEEP:
        want_id, want = None, "bad_request"
    problems = []
    if _canonical(body.get("id")) != _canonical(want_id):
        problems.append(f"answer id {_short(_canonical(body.get('id')))} for {_short(line)}")
    if body["ok"] and want is not None:
        problems.append(f"ok answer, expected {want}, for {_short(line)}")
    elif not body["ok"] and want is not None and code != want:
        problems.append(f"code {code}, expected {want}, for {_short(line)}")
    return problems


@dataclass
class SessionResult:
    lines: int = 0
    ok: int = 0
    errors: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)


def _tally(result: SessionResult, line: bytes, answer: bytes | None) -> None:
    result.violations.extend(check_answer(line, answer))
    with deeper_stack(), contextlib.suppress(ValueError, AttributeError, TypeError):
        body = json.loads(answer or b"")
        if body["ok"]:
            result.ok += 1
        else:
            result.errors += 1
            result.codes[str(body["error"]["code"])] += 1


def run_session(path: Path, session: Session) -> SessionResult:
    """Play one session on one connection and check every answer and the ending."""
    result = SessionResult()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(str(path))
        answers = _Lines(sock)
        requests = [line for line in session.lines if line.strip()]
        result.lines = len(session.lines) + bool(session.tail)
        sender: threading.Thread | None = None
        if session.pipelined:
            payload = b"".join(line + b"\n" for line in session.lines)
            if session.ending == "oversize":
                payload += session.tail
            sender = _send_in_background(sock, payload)
            for line in requests:
                _tally(result, line, answers.read())
        else:
            for line in session.lines:
                try:
                    sock.sendall(line + b"\n")
                except OSError as exc:
                    result.violations.append(f"connection lost ({exc}) before {_short(line)}")
                    return result
                if line.strip():
                    _tally(result, line, answers.read())
            if session.ending == "oversize":
                sender = _send_in_background(sock, session.tail)
        if session.ending == "oversize":
            final = answers.read()
            body = _decode(final) if final is not None else None
            error = body.get("error") if isinstance(body, dict) else None
            if not isinstance(error, dict) or error.get("code") != "line_too_long":
                result.violations.append(f"oversized line answered {_short(final or b'')}")
            else:
                result.errors += 1
                result.codes["line_too_long"] += 1
        elif session.ending in ("partial", "half_close"):
            try:
                sock.sendall(session.tail)
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                result.violations.append(f"connection lost ({exc}) before the {session.ending}")
                return result
        if session.ending != "close":
            extra = answers.read()
            if extra is not None:
                result.violations.append(f"unexpected answer {_short(extra)} before close")
        if sender is not None:
            sender.join(15)
    return result


def fuzz_socket(
    daemon: DaemonProcess, examples: int, seed: int, *, strict: bool = False
) -> dict[str, Any]:
    """Play ``examples`` generated sessions against the daemon's control socket; after
    each, the daemon must still answer ping."""
    totals = SessionResult()
    figures: Counter[str] = Counter()

    @hypothesis_seed(seed)
    @_settings(examples)
    @given(sessions(MAX_LINE_BYTES))
    def run(session: Session) -> None:
        result = run_session(daemon.socket, session)
        figures["sessions"] += 1
        figures[f"ending_{session.ending}"] += 1
        figures["pipelined"] += session.pipelined
        totals.lines += result.lines
        totals.ok += result.ok
        totals.errors += result.errors
        totals.codes.update(result.codes)
        if alive(daemon):
            figures["pings_ok"] += 1
        else:
            result.violations.append(f"the daemon stopped answering:\n{daemon.log()[-3000:]}")
        if result.violations:
            figures["violating_sessions"] += 1
            room = _VIOLATIONS_KEPT - len(totals.violations)
            totals.violations.extend(result.violations[: max(room, 0)])
            if strict:
                raise AssertionError("\n".join(result.violations))

    run()
    return {
        "sessions": figures["sessions"],
        "inputs": totals.lines,
        "ok_answers": totals.ok,
        "error_answers": totals.errors,
        "error_codes": dict(sorted(totals.codes.items())),
        "endings": {k[7:]: v for k, v in sorted(figures.items()) if k.startswith("ending_")},
        "pipelined_sessions": figures["pipelined"],
        "pings_ok": figures["pings_ok"],
        "violating_sessions": figures["violating_sessions"],
        "violations": totals.violations,
        "daemon_alive": alive(daemon),
    }


# ---- many clients at once -------------------------------------------------------------


def daemon_fds(daemon: DaemonProcess) -> int:
    """How many files the daemon has open."""
    assert daemon.proc is not None
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))


def _connect(path: Path, patience_s: float) -> socket.socket | None:
    """A connected client, or None when the daemon's backlog stays full."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(patience_s)
    deadline = time.monotonic() + patience_s
    while True:
        try:
            sock.connect(str(path))
            return sock
        except BlockingIOError:  # the listen backlog is full for a moment
            if time.monotonic() > deadline:
                sock.close()
                return None
            time.sleep(0.002)


def connection_storm(
    daemon: DaemonProcess, clients: int, patience_s: float = 20.0
) -> dict[str, Any]:
    """Open ``clients`` connections at once, ping on each, read every answer, close them
    all; then wait for the daemon's open files to fall back to where they were."""
    assert alive(daemon)
    baseline = daemon_fds(daemon)
    socks: list[socket.socket] = []
    codes: Counter[str] = Counter()
    served = unanswered = 0
    try:
        for _ in range(clients):
            sock = _connect(daemon.socket, patience_s)
            if sock is None:
                break
            socks.append(sock)
        for sock in socks:
            with contextlib.suppress(OSError):  # a refused client may be closed already
                sock.sendall(b'{"id": 7, "cmd": "ping"}\n')
        for sock in socks:
            data = b""
            with contextlib.suppress(OSError):
                while not data.endswith(b"\n") and (chunk := sock.recv(4096)):
                    data += chunk
            body = _decode(data) if data else None
            if not isinstance(body, dict):
                unanswered += 1
            elif body.get("ok") and body.get("id") == 7 and body["result"].get("pong"):
                served += 1
            else:
                codes[str((body.get("error") or {}).get("code"))] += 1
        peak = daemon_fds(daemon)
    finally:
        for sock in socks:
            sock.close()
    started = time.monotonic()
    settled = daemon_fds(daemon)
    while settled > baseline and time.monotonic() - started < 20:
        time.sleep(0.05)
        settled = daemon_fds(daemon)
    return {
        "clients": clients,
        "connected": len(socks),
        "served": served,
        "error_codes": dict(sorted(codes.items())),
        "unanswered": unanswered,
        "baseline_fds": baseline,
        "peak_fds": peak,
        "settled_fds": settled,
        "settle_s": round(time.monotonic() - started, 3),
        "daemon_alive": alive(daemon),
    }


def storms(root: Path, clients: int) -> dict[str, Any]:
    """Connection storms: with the default cap (64), with a cap above ``clients``, and
    with that cap but the daemon's own open-file limit cut to 200 (prlimit)."""
    out: dict[str, Any] = {}
    with fuzz_daemon(root / "cap64") as daemon:
        out["default_cap"] = connection_storm(daemon, clients)
    roomy = {"PERSONAD_SOCKET__MAX_CONNECTIONS": str(clients + 100)}
    with fuzz_daemon(root / "roomy", roomy) as daemon:
        out["cap_above_clients"] = connection_storm(daemon, clients)
    if shutil.which("prlimit"):
        with fuzz_daemon(root / "fdlimit", roomy) as daemon:
            assert daemon.proc is not None
            subprocess.run(["prlimit", f"--pid={daemon.proc.pid}", "--nofile=200:200"], check=True)
            out["fd_limit_200"] = connection_storm(daemon, clients, patience_s=3.0)
    return out


# ---- all of it ------------------------------------------------------------------------


def run_fuzz(root: Path, examples: int, seed: int, clients: int = 1000) -> dict[str, Any]:
    """Full run for bench/reliability.py: run_fuzz(root, examples=20_000, seed=0)
    (CI runs the parts with a few hundred)."""
    started = time.monotonic()
    out: dict[str, Any] = {"examples": examples, "seed": seed}
    out["parsers"] = fuzz_parsers(examples, seed)
    drop = max(20, min(examples // 20, 500))
    with fuzz_daemon(root / "folder") as daemon:
        out["daemon_folder"] = fuzz_daemon_folder(daemon, sample_files(drop, seed + 1))
        out["daemon_folder"]["exit_code"] = daemon.stop()
    with fuzz_daemon(root / "socket") as daemon:
        out["socket"] = fuzz_socket(daemon, max(50, examples // 4), seed + 2)
        out["socket"]["exit_code"] = daemon.stop()
    out["storms"] = storms(root, clients)
    out["crashes"] = (
        out["parsers"]["crashes"]
        + sum(1 for part in ("daemon_folder", "socket") if not out[part]["daemon_alive"])
        + sum(1 for storm in out["storms"].values() if not storm["daemon_alive"])
    )
    out["violations"] = (
        out["parsers"]["violating_inputs"]
        + len(out["daemon_folder"]["violations"])
        + out["socket"]["violating_sessions"]
    )
    out["seconds"] = round(time.monotonic() - started, 1)
    return out
