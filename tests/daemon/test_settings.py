"""Settings: defaults, TOML < environment < CLI flags, and one clear message for a bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_need_no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    s = load_settings()
    assert s.state_dir == tmp_path / ".local" / "share" / "personad"
    assert s.profiles_dir == s.state_dir / "profiles"
    assert s.socket_path == tmp_path / "run" / "personad" / "personad.sock"
    assert s.config_file is None


def test_systemd_directories_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/personad:/var/lib/other")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/personad")
    s = load_settings()
    assert s.state_dir == Path("/var/lib/personad")
    assert s.socket_path == Path("/run/personad/personad.sock")


def test_toml_then_environment_then_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "personad.toml"
    cfg.write_text(
        'state_dir = "/srv/from-toml"\n[ingest]\ndebounce_ms = 10\nsettle_s = 3.5\n'
        "[socket]\nmax_connections = 7\n"
    )
    s = load_settings(cfg)
    assert (s.state_dir, s.ingest.debounce_ms, s.ingest.settle_s) == (
        Path("/srv/from-toml"),
        10,
        3.5,
    )
    assert s.socket.max_connections == 7

    monkeypatch.setenv("PERSONAD_INGEST__DEBOUNCE_MS", "20")
    monkeypatch.setenv("PERSONAD_STATE_DIR", "/srv/from-env")
    s = load_settings(cfg)
    assert (s.state_dir, s.ingest.debounce_ms, s.ingest.settle_s) == (
        Path("/srv/from-env"),
        20,
        3.5,
    )

    s = load_settings(cfg, {"state_dir": "/srv/from-flag", "socket_path": None})
    assert s.state_dir == Path("/srv/from-flag")
    assert s.profiles_dir == Path("/srv/from-flag/profiles")
    assert s.ingest.debounce_ms == 20


def test_config_file_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('profiles_dir = "/data/people"\n')
    monkeypatch.setenv("PERSONAD_CONFIG", str(cfg))
    s = load_settings()
    assert s.profiles_dir == Path("/data/people")
    assert s.config_file == cfg


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[ingest]\ndebounce_ms = "soon"\n', "invalid setting `ingest.debounce_ms` in {cfg}"),
        ("[ingest]\nsettle_s = -1\n", "invalid setting `ingest.settle_s` in {cfg}"),
        ("colour = 'blue'\n", "invalid setting `colour` in {cfg}: unknown setting"),
        ("[index]\nembedding_provider = 'magic'\n", "`index.embedding_provider` in {cfg}"),
        ("state_dir = \n", "cannot read configuration file {cfg}"),
    ],
)
def test_bad_setting_names_key_and_file(tmp_path: Path, toml: str, expected: str) -> None:
    cfg = tmp_path / "personad.toml"
    cfg.write_text(toml)
    with pytest.raises(SettingsError) as info:
        load_settings(cfg)
    assert expected.format(cfg=cfg) in str(info.value)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONAD_SOCKET__MAX_LINE_BYTES", "lots")
    with pytest.raises(SettingsError, match="environment variable PERSONAD_SOCKET__MAX_LINE_BYTES"):
        load_settings()


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_cli_stops_on_bad_setting_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "personad.toml"
    cfg.write_text("[ingest]\nmax_file_mb = 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"`ingest.max_file_mb` in {cfg}" in lines[0]


def test_shipped_config_file_is_valid() -> None:
    s = load_settings(REPO / "etc" / "personad.toml")
    assert s.ingest.debounce_ms == 50


def test_config_flag_does_not_stay_in_the_callers_environment(
    monkeypatch: pytest.MonkeyPatch, short_tmp: Path
) -> None:
    """A script (or test) calling the CLI in its own process keeps its environment: the next
    load_settings() there does not read the file an earlier command named."""
    from daemon import cli

    monkeypatch.delenv("PERSONAD_CONFIG", raising=False)
    cfg = short_tmp / "c.toml"
    cfg.write_text(f'state_dir = "{short_tmp / "state"}"\nsocket_path = "{short_tmp / "s"}"\n')
    assert cli.main(["status", "--config", str(cfg)]) != 0  # no daemon: it says so
    assert "PERSONAD_CONFIG" not in os.environ
    monkeypatch.setenv("PERSONAD_CONFIG", "/elsewhere.toml")
    cli.main(["status", "--config", str(cfg)])
    assert os.environ["PERSONAD_CONFIG"] == "/elsewhere.toml"
