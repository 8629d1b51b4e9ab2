"""Fuzzing the control socket of a real daemon: every request line gets an answer with a
code, and the daemon keeps answering."""

from __future__ import annotations

from tests.daemon_process import DaemonProcess
from tests.reliability.fuzz import alive, fuzz_socket, run_session
from tests.reliability.fuzz_inputs import Session


def test_generated_sessions_are_all_answered(daemon: DaemonProcess) -> None:
    figures = fuzz_socket(daemon, 400, seed=0, strict=True)
    assert figures["sessions"] == 400 and figures["pings_ok"] == 400
    assert figures["violations"] == [] and figures["daemon_alive"]
    # Every kind of ending and both ways of sending were tried, and the answers cover
    # the protocol's error codes.
    assert set(figures["endings"]) == {"close", "half_close", "partial", "oversize"}
    assert 0 < figures["pipelined_sessions"] < 400
    assert {"bad_request", "unknown_command", "bad_args", "line_too_long"} <= set(
        figures["error_codes"]
    )
    assert figures["ok_answers"] > 0


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_nesting_around_the_recursion_limit_is_answered(daemon: DaemonProcess) -> None:
    """Lines the daemon cannot decode, or decodes but cannot echo the id of, used to
    close the connection without an answer."""
    lines = []
    for depth in range(900, 1_100):
        lines.append(f'{{"id": {_deep(depth)}, "cmd": "ping"}}'.encode())
        lines.append(f'{{"id": {depth}, "cmd": "jobs", "args": {{"a": {_deep(depth)}}}}}'.encode())
    lines.append(_deep(30_000).encode())
    result = run_session(daemon.socket, Session(tuple(lines), pipelined=True, ending="close"))
    assert result.violations == []
    assert result.ok + result.errors == len(lines)
    assert result.codes["bad_request"] > 0 and result.ok > 0
    assert alive(daemon)


def test_many_requests_in_one_write_are_answered_in_order(daemon: DaemonProcess) -> None:
    commands = [("ping", "nope", "jobs")[n % 3] for n in range(500)]
    lines = tuple(f'{{"id": {n}, "cmd": "{cmd}"}}'.encode() for n, cmd in enumerate(commands))
    result = run_session(daemon.socket, Session(lines, pipelined=True, ending="half_close"))
    assert result.violations == []  # ids checked line by line: answers came in order
    unknown = commands.count("nope")
    assert result.ok == 500 - unknown and result.codes == {"unknown_command": unknown}
