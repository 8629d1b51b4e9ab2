"""The one Settings object: TOML file < PERSONAD_* environment < CLI flags.

Built once at start-up (``load_settings``) and passed down; nothing else reads the
environment. Every key is documented by its ``Field(description=...)``; the README's
configuration reference is generated from these models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from services.errors import PersonadError
from services.settings_sections import (
    AskSettings,
    EvalSettings,
    HttpSettings,
    IndexSettings,
    IngestSettings,
    LogSettings,
    OllamaSettings,
    SocketSettings,
    TrainingSettings,
    TriggerSettings,
)

ENV_PREFIX = "PERSONAD_"
CONFIG_ENV = "PERSONAD_CONFIG"


class SettingsError(PersonadError):
    """A setting is invalid or the configuration file cannot be read."""


def _first_dir(value: str | None) -> Path | None:
    # systemd passes colon-separated lists in STATE_DIRECTORY / RUNTIME_DIRECTORY.
    if not value:
        return None
    return Path(value.split(":")[0])


def default_state_dir() -> Path:
    systemd = _first_dir(os.environ.get("STATE_DIRECTORY"))
    if systemd:
        return systemd
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "personad"


def default_socket_path() -> Path:
    systemd = _first_dir(os.environ.get("RUNTIME_DIRECTORY"))
    if systemd:
        return systemd / "personad.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "personad" if runtime else Path(f"/tmp/personad-{os.getuid()}")
    return base / "personad.sock"


class Settings(BaseSettings):
    """personad's settings. Keys are the outside contract (docs/ARCHITECTURE.md, "Settings")."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Ledger, index, runs and models. Default: $STATE_DIRECTORY or "
        "~/.local/share/personad.",
    )
    profiles_dir: Path | None = Field(
        None,
        description="Watched profiles, '<profiles_dir>/<profile>/memory/'. Default: "
        "<state_dir>/profiles.",
    )
    socket_path: Path | None = Field(
        None,
        description="Control socket. Default: $RUNTIME_DIRECTORY/personad.sock or "
        "$XDG_RUNTIME_DIR/personad/personad.sock.",
    )
    log: LogSettings = Field(default_factory=LogSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    index: IndexSettings = Field(default_factory=IndexSettings)  # type: ignore[arg-type]
    socket: SocketSettings = Field(default_factory=SocketSettings)  # type: ignore[arg-type]
    http: HttpSettings = Field(default_factory=HttpSettings)  # type: ignore[arg-type]
    ollama: OllamaSettings = Field(default_factory=OllamaSettings)  # type: ignore[arg-type]
    training: TrainingSettings = Field(default_factory=TrainingSettings)  # type: ignore[arg-type]
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)  # type: ignore[arg-type]
    ask: AskSettings = Field(default_factory=AskSettings)  # type: ignore[arg-type]
    eval: EvalSettings = Field(default_factory=EvalSettings)  # type: ignore[arg-type]

    # Where the settings came from (not a setting): shown by `status`.
    config_file: Path | None = Field(None, exclude=True, description="The TOML file read.")

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        self.state_dir = self.state_dir.expanduser()
        if self.profiles_dir is None:
            self.profiles_dir = self.state_dir / "profiles"
        self.profiles_dir = self.profiles_dir.expanduser()
        if self.socket_path is None:
            self.socket_path = default_socket_path()
        self.socket_path = self.socket_path.expanduser()
        return self

    # Typed accessors: both are always set after validation.
    @property
    def profiles(self) -> Path:
        assert self.profiles_dir is not None
        return self.profiles_dir

    @property
    def socket_file(self) -> Path:
        assert self.socket_path is not None
        return self.socket_path

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "ledger.sqlite3"

    @property
    def index_dir(self) -> Path:
        return self.state_dir / "index"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def _where(loc: tuple[Any, ...], config_file: Path | None, overrides: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in loc)
    env_name = ENV_PREFIX + "__".join(str(p) for p in loc).upper()
    if loc and loc[0] in overrides:
        return f"`{key}` (command-line flag)"
    if env_name in os.environ:
        return f"`{key}` (environment variable {env_name})"
    if config_file is not None:
        return f"`{key}` in {config_file}"
    return f"`{key}`"


def load_settings(
    config_file: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build the Settings: defaults < TOML file < environment < ``overrides`` (CLI flags).

    ``config_file`` defaults to $PERSONAD_CONFIG. A missing named file, a TOML syntax
    error or an invalid value raises SettingsError with one message naming the key and
    the file (or variable) it came from.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    path: Path | None = None
    if config_file is None and os.environ.get(CONFIG_ENV):
        config_file = os.environ[CONFIG_ENV]
    if config_file is not None:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise SettingsError(f"configuration file {path} does not exist or is not a file")
    cls: type[Settings] = Settings
    if path is not None:
        cls = type(
            "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}
        )
    try:
        settings = cls(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        loc = tuple(p for p in err["loc"] if p != "__root__")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        raise SettingsError(f"invalid setting {_where(loc, path, overrides)}: {msg}{more}") from exc
    except Exception as exc:  # TOML syntax errors and unreadable files
        raise SettingsError(f"cannot read configuration file {path}: {exc}") from exc
    settings.config_file = path
    return settings
