"""The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium through
Debian's chromedriver (/usr/bin/chromedriver, named explicitly: Selenium Manager, which
would download a driver, is never asked). A screenshot of the dashboard during a training
job is saved to test-artifacts/ (or $TEST_ARTIFACTS_DIR)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException

from tests.daemon_process import DaemonProcess
from tests.paths import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or REPO / "test-artifacts")
HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)


def _memories(path: Path, n: int, start: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # a name the watcher ignores, then renamed
    tmp.write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"question number {i} about the world?",
                    "completion": f"answer number {i}: hello world, the question and the answer.",
                    "quality_score": 9,
                }
            )
            for i in range(start, start + n)
        )
    )
    tmp.rename(path)


def _until(check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s (last: {last!r})")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(self: Any, args: list[str]) -> dict[str, str]:
        raise AssertionError(f"Selenium Manager was asked for a browser or driver: {args}")

    original = SeleniumManager.binary_paths
    SeleniumManager.binary_paths = refuse  # type: ignore[method-assign]
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=430,1700",  # a phone's width
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        SeleniumManager.binary_paths = original  # type: ignore[method-assign]


def _severe(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _field(driver: Any, profile: str, field: str) -> str:
    return _text(driver, f'[data-profile="{profile}"][data-field="{field}"]')


def _text(driver: Any, css: str) -> str:
    """The text of the first element matching ``css``; "" while there is none (read in
    the page in one go: the dashboard re-renders its parts as events arrive)."""
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css
    )
    return str(text)


def _dashboard_url(d: DaemonProcess) -> str:
    d.http_url()  # listening
    done = d.cli("dashboard")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _daemon(root: Path, env: dict[str, str], n: int) -> DaemonProcess:
    d = DaemonProcess(root, env={"PERSONAD_TRAINING__STOP_GRACE_S": "1", **env})
    _memories(d.profiles_dir / "alice" / "memory" / "first.jsonl", n)
    d.start()
    d.wait_for(lambda: d.call("status")["profiles"].get("alice", {}).get("eligible_samples") == n)
    return d


@pytest.fixture(scope="module")
def trainer(tiny_model: Path) -> Iterator[DaemonProcess]:
    """A daemon that trains the tiny model for real."""
    root = Path(tempfile.mkdtemp(prefix="pd-"))
    d = _daemon(root, {"PERSONAD_TRAINING__BASE_MODEL": str(tiny_model)}, 40)
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_page_loads_clean_and_a_dropped_memory_shows_within_2_s(
    browser: Any, trainer: DaemonProcess
) -> None:
    browser.get(_dashboard_url(trainer))
    assert "token" not in browser.current_url  # the link's token went into a cookie
    _until(lambda: _field(browser, "alice", "memories") == "40", 10)
    _until(lambda: _text(browser, "#live") == "live", 10)
    assert _severe(browser) == []
    browser.execute_script("window.notReloaded = true")
    dropped = time.monotonic()
    _memories(trainer.profiles_dir / "alice" / "memory" / "dropped.jsonl", 1, start=500)
    _until(lambda: _field(browser, "alice", "memories") == "41", 5, interval=0.02)
    seen_after = time.monotonic() - dropped
    assert seen_after <= 2.0, f"the dropped memory showed after {seen_after:.2f} s"
    assert browser.execute_script("return window.notReloaded") is True
    assert _field(browser, "alice", "eligible_samples") == "41"
    # The search box finds the dropped memory.
    browser.find_element("id", "search-query").send_keys("question number 500")
    browser.find_element("css selector", "#search-form button").click()
    first = _until(lambda: _text(browser, "#search-results li"), 10)
    assert "answer number 500" in first, first
    assert _severe(browser) == []
    print(f"dropped memory in the counts after {seen_after:.2f} s")


def _bar(browser: Any) -> tuple[int, int] | None:
    bar = browser.execute_script(
        "const b = document.querySelector('progress.job-bar');"
        "return b ? [b.dataset.step, b.dataset.total] : null;"
    )
    return (int(bar[0]), int(bar[1])) if bar else None


def test_a_training_jobs_progress_bar_advances_live(browser: Any, trainer: DaemonProcess) -> None:
    browser.get(_dashboard_url(trainer))
    _until(lambda: _text(browser, "#live") == "live", 10)
    browser.execute_script("window.notReloaded = true")
    config = {
        "max_steps": 100,
        "save_steps": 100,
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
    }
    job = trainer.call("train", {"profile": "alice", "force": True, "config": config})["job"]
    steps: list[int] = []
    shot = ARTIFACTS / "dashboard-during-job.png"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        bar = _bar(browser)
        if bar and bar[1] and (not steps or bar[0] != steps[-1]):
            steps.append(bar[0])
            if 0 < bar[0] < bar[1] and len(steps) >= 3 and not shot.exists():
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(shot))
        state = next(j for j in trainer.call("jobs")["jobs"] if j["id"] == job["id"])["state"]
        if state not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert state == "succeeded", trainer.log()[-3000:]
    moving = [s for s in steps if s > 0]
    assert len(set(moving)) >= 3, steps
    assert moving == sorted(moving), steps
    assert shot.is_file()
    print(f"progress bar steps seen: {steps}; screenshot: {shot}")
    assert browser.execute_script("return window.notReloaded") is True
    # The finished run: its loss curves and gate verdict on the page.
    run = f"#run-{job['id']}"
    _until(lambda: "succeeded" in _text(browser, f"{run} h3"), 15)

    def opened() -> str:
        # The list is redrawn as the job's end comes in: click until the detail stays.
        with contextlib.suppress(StaleElementReferenceException):
            if not browser.find_elements("css selector", f"{run} svg polyline"):
                browser.find_element("css selector", f"{run} button").click()
                return ""
            return _text(browser, f"{run} .run-detail")
        return ""

    verdict = _until(opened, 20, interval=0.5)
    assert "gate passed" in verdict or "gate rejected" in verdict, verdict
    assert _severe(browser) == []


@pytest.fixture(scope="module")
def publisher(tiny_model: Path) -> Iterator[DaemonProcess]:
    """A daemon whose (stand-in) training child publishes at once: two versions."""
    root = Path(tempfile.mkdtemp(prefix="pd-"))
    python = root / "fake-python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_trainer.py"}" "$@"\n')
    python.chmod(0o755)
    env = {
        "FAKE_TRAINER": "ok",
        "PERSONAD_TRAINING__PYTHON": str(python),
        "PERSONAD_TRAINING__BASE_MODEL": str(tiny_model),
        "PERSONAD_TRAINING__FAMILY": "smollm",
        "PERSONAD_TRIGGERS__LORA_MIN_SAMPLES": "4",
    }
    d = _daemon(root, env, 12)
    try:
        for round_ in (1, 2):
            if round_ > 1:  # new samples: a run needs some since the last training
                _memories(d.profiles_dir / "alice" / "memory" / "more.jsonl", 6, start=100)
                d.wait_for(
                    lambda: d.call("status")["profiles"]["alice"]["since_last_training"] == 6
                )
            job = d.call("train", {"profile": "alice", "force": True})["job"]
            d.wait_for(
                lambda job=job: (
                    next(j for j in d.call("jobs")["jobs"] if j["id"] == job["id"])["state"]
                    == "succeeded"
                )
            )
            assert d.call("status")["profiles"]["alice"]["active_version"] == f"v{round_}"
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_rollback_from_the_page_changes_the_active_version(
    browser: Any, publisher: DaemonProcess
) -> None:
    browser.get(_dashboard_url(publisher))
    _until(lambda: "(active)" in _text(browser, "#version-2"), 10)
    # Dismissed: nothing changes.
    browser.find_element("css selector", "#version-1 button.rollback").click()
    browser.switch_to.alert.dismiss()
    time.sleep(0.5)
    assert publisher.call("status")["profiles"]["alice"]["active_version"] == "v2"
    # Confirmed: v1 is the active model.
    browser.find_element("css selector", "#version-1 button.rollback").click()
    alert = browser.switch_to.alert
    assert "v1" in alert.text
    alert.accept()
    _until(lambda: "(active)" in _text(browser, "#version-1"), 10)
    assert publisher.call("status")["profiles"]["alice"]["active_version"] == "v1"
    versions = publisher.call("versions", {"profile": "alice"})["versions"]
    assert [v["version"] for v in versions if v["active"]] == [1]
    _until(lambda: _field(browser, "alice", "active_version") == "v1", 15)
    assert _severe(browser) == []


def test_without_the_token_the_page_and_the_api_refuse(
    browser: Any, publisher: DaemonProcess
) -> None:
    url = _dashboard_url(publisher)
    base = url.split("?")[0]
    active = publisher.call("status")["profiles"]["alice"]["active_version"]
    browser.delete_all_cookies()
    for address in (base, base + "?token=" + "x" * 43):
        browser.get(address)
        assert "refused" in browser.title
        assert "401" in browser.find_element("tag name", "h1").text
        assert browser.find_elements("id", "profiles") == []
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/status').then((r) => done(r.status));"
    )
    assert status == 401
    rollback = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/rollback', {method: 'POST', body: JSON.stringify({profile: 'alice'})})"
        ".then((r) => done(r.status));"
    )
    assert rollback == 401
    assert publisher.call("status")["profiles"]["alice"]["active_version"] == active
    # With the link, the same browser gets in.
    browser.get(url)
    _until(lambda: browser.find_elements("id", "profiles"), 10)
