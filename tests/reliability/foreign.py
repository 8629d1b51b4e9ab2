"""Files that are not the profile's: links planted in a memory folder, and profile names.

:func:`run_planted_links` plants, in one profile's watched folder of a real daemon, a
symbolic link to another profile's memory file, to a file in the state directory, to
``/etc/passwd``, a symlinked directory into the other profile's tree and (as root) a hard
link to a file another user owns; next to them a link that stays inside the folder. It
returns what the daemon did with each: every link that leaves the tree must be a reject
with a reason and none of its text may reach the profile's memories or search.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tests.daemon_process import DaemonProcess
from tests.reliability.fuzz import fuzz_daemon

OWN = "Alice walks the cliff path at dawn with her grey lurcher"
INSIDE = "Alice keeps her grandmother's recipe for fig jam in the blue tin"
SECRET = "Bob hides the spare key under the third zebra stone"
STATE_SECRET = "The state directory holds a dataset row about quokka taxes"
OTHER_USER = "Another user's diary mentions the walrus orchestra"
FOREIGN_TEXTS = (SECRET, STATE_SECRET, OTHER_USER, "root:")


def _jsonl(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"prompt": "What do you remember?", "completion": text, "quality_score": 8}
    path.write_text(json.dumps(record) + "\n")


def _plant(d: DaemonProcess, outside: Path) -> dict[str, Path]:
    """The planted links of alice's folder, by name, each to what it points at."""
    alice = d.profiles_dir / "alice" / "memory"
    bob = d.profiles_dir / "bob" / "memory"
    _jsonl(bob / "secret.jsonl", SECRET)
    _jsonl(d.state_dir / "runs" / "planted" / "train.jsonl", STATE_SECRET)
    planted = {
        "to-other-profile.jsonl": bob / "secret.jsonl",
        "to-state-dir.jsonl": d.state_dir / "runs" / "planted" / "train.jsonl",
        "to-etc.txt": Path("/etc/passwd"),
        "to-other-profile-dir": bob,
    }
    for name, target in planted.items():
        (alice / name).symlink_to(target, target_is_directory=target.is_dir())
    if os.geteuid() == 0:  # only root can make a file another user owns
        foreign = outside / "diary.jsonl"
        _jsonl(foreign, OTHER_USER)
        os.chown(foreign, 65534, 65534)
        os.link(foreign, alice / "hard-link.jsonl")
        planted["hard-link.jsonl"] = foreign
    return planted


def run_planted_links(root: Path, timeout: float = 60.0) -> dict[str, Any]:
    outside = root / "elsewhere"
    outside.mkdir(parents=True, exist_ok=True)
    with fuzz_daemon(root, indexed=True) as d:
        alice = d.profiles_dir / "alice" / "memory"
        _jsonl(alice / "own.jsonl", OWN)
        _jsonl(alice / "sub" / "real.jsonl", INSIDE)
        (alice / "alias.jsonl").symlink_to(Path("sub") / "real.jsonl")  # stays inside
        planted = _plant(d, outside)
        # Files (not directories) must each end as a reject; the directory link is not walked.
        files = {n for n, t in planted.items() if not t.is_dir()}
        deadline = time.monotonic() + timeout
        rejects: dict[str, str] = {}
        while time.monotonic() < deadline:
            rows = d.call("rejects", {"profile": "alice", "limit": 1000})["rejects"]
            rejects = {Path(r["path"]).name: r["reason"] for r in rows}
            counts = d.call("status")["profiles"].get("alice", {})
            # own.jsonl and sub/real.jsonl; alias.jsonl holds the same memory as real.jsonl.
            if files <= set(rejects) and counts.get("indexed") == 2 and counts.get("queue") == 0:
                break
            time.sleep(0.2)
        counts = d.call("status")["profiles"].get("alice", {})
        texts = [
            hit["text"]
            for query in (SECRET, STATE_SECRET, OTHER_USER, "root x 0 0 root /root /bin/bash")
            for hit in d.call("search", {"profile": "alice", "query": query, "k": 10})["results"]
        ]
        leaked = sorted({t for t in texts for f in FOREIGN_TEXTS if f in t})
        refused = {
            name: rejects.get(name, "")
            for name in sorted(files)
            if "leads outside" in rejects.get(name, "") or "hard link" in rejects.get(name, "")
        }
        return {
            "planted": len(planted),
            "planted_files": sorted(files),
            "refused": len(refused),
            "reasons": refused,
            "alice_memories": counts.get("memories"),
            "alice_indexed": counts.get("indexed"),
            "leaked_texts": leaked,
            "inside_link_rejected": "alias.jsonl" in rejects,
            "hard_link_tested": "hard-link.jsonl" in planted,
        }
