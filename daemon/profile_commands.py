"""The `stats` and `remember` socket commands: a profile's training statistics, and one
prompt/completion pair written into its memory folder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from daemon.control import CommandError
from daemon.runtime import Runtime
from services.curation import load_rules
from services.ledger import Ledger
from services.profile_names import RULE, is_valid_profile_name
from services.profile_stats import profile_stats
from services.publish.local import LocalRegistry
from services.remember import RememberError, remember

T = TypeVar("T")


class ProfileCommands:
    """Mixed into ``daemon.commands.Commands``, which gives the runtime, the thread pool
    and the per-thread ledger."""

    rt: Runtime

    def _ledger(self) -> Ledger:  # pragma: no cover - Commands provides it
        raise NotImplementedError

    def _known_profile(self, profile: str) -> None:  # pragma: no cover - Commands provides it
        raise NotImplementedError

    async def _run(self, fn: Callable[[], T]) -> T:  # pragma: no cover - Commands provides it
        raise NotImplementedError

    def _stats(self, profile: str) -> dict[str, Any]:
        s = self.rt.settings
        return profile_stats(
            self._ledger(),
            LocalRegistry(s.state_dir / "models"),
            profile,
            lora_threshold=s.triggers.lora_threshold,
        )

    async def stats(self, args: dict[str, Any]) -> dict[str, Any]:
        """A profile's statistics under ZEGA's field names (services.profile_stats)."""
        profile = _profile(args)

        def run() -> dict[str, Any]:
            self._known_profile(profile)
            return self._stats(profile)

        return await self._run(run)

    async def remember(self, args: dict[str, Any]) -> dict[str, Any]:
        """Write one prompt/completion pair into the profile's memory folder; the watcher
        ingests it. A new profile's folder is created."""
        profile = _profile(args)
        memory_dir = self.rt.settings.profiles / profile / "memory"

        def run() -> dict[str, Any]:
            try:
                done = remember(
                    memory_dir,
                    prompt=args.get("prompt"),
                    completion=args.get("completion"),
                    quality=args.get("quality"),
                    metadata=args.get("metadata"),
                    rules=load_rules(),
                )
            except RememberError as exc:
                raise CommandError("bad_args", str(exc)) from exc
            except OSError as exc:
                raise CommandError(
                    "remember_failed", f"cannot write into {memory_dir}: {exc}"
                ) from exc
            known = profile in self._ledger().profiles()
            until = self._stats(profile)["examples_until_next_training"] if known else None
            if (
                until is not None
                and done.eligible
                and done.memory_id not in (self._ledger().memory_ids(profile))
            ):
                until = max(0, until - 1)  # this one counts once it is ingested
            return {"profile": profile, **done.to_dict(), "examples_until_next_training": until}

        return await self._run(run)


def _profile(args: dict[str, Any]) -> str:
    value = args.get("profile")
    if not isinstance(value, str) or not value:
        raise CommandError("bad_args", "'profile' must be a non-empty string")
    if not is_valid_profile_name(value):
        raise CommandError("bad_args", f"invalid profile name {value!r}: {RULE}")
    return value
