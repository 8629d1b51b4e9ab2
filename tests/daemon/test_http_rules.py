"""The HTTP API's rules without a daemon: the token file, the hosts a server accepts, the
HTTP status of each socket error code, query-string values."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from daemon.http_api import http_status, query_value
from daemon.http_security import TokenFileError, allowed_hosts, load_or_create_token
from daemon.http_server import parse_listen


def test_the_token_is_made_once_private_and_kept(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    path = tmp_path / "http-token"
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path) == token  # the next start reads it
    path.chmod(0o644)
    assert load_or_create_token(tmp_path) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # re-moded
    path.write_text("short\n")
    with pytest.raises(TokenFileError, match="shorter than 32"):
        load_or_create_token(tmp_path)


def test_two_state_dirs_get_two_tokens(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert load_or_create_token(tmp_path / "a") != load_or_create_token(tmp_path / "b")


def test_hosts_a_server_answers_to() -> None:
    assert allowed_hosts("127.0.0.1", 8765) == {
        "127.0.0.1:8765",
        "localhost:8765",
        "[::1]:8765",
    }
    assert "[::1]:9000" in allowed_hosts("::1", 9000)
    wildcard = allowed_hosts("0.0.0.0", 8765, ["box.lan"])
    assert {"box.lan:8765", "localhost:8765", "127.0.0.1:8765"} <= wildcard
    assert "evil.example:8765" not in wildcard
    assert "localhost:8766" not in wildcard  # another port is another origin
    assert parse_listen("[::1]:8765") == ("::1", 8765)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)


def test_each_socket_error_code_has_an_http_status() -> None:
    assert [
        http_status(c)
        for c in (
            "bad_args",
            "bad_request",
            "unknown_profile",
            "unknown_job",
            "unknown_command",
            "not_cancellable",
            "rollback_failed",
            "ask_failed",
            "unavailable",
            "busy",
            "timeout",
            "internal",
            "something_new",
        )
    ] == [400, 400, 404, 404, 404, 409, 409, 409, 503, 503, 504, 500, 400]


def test_query_values_read_as_json_scalars_or_text() -> None:
    assert [query_value(v) for v in ("3", "-2", "0.5", "true", "null", "v2", "", "1e5")] == [
        3,
        -2,
        0.5,
        True,
        None,
        "v2",
        "",
        "1e5",
    ]
