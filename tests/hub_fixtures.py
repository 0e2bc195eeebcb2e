"""pytest fixtures for the hub tests (a plugin: test modules name it in ``pytest_plugins``), so the
hub and browser tests share one real hub per session instead of building and starting their own.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess

import psutil
import pytest

from hubtools import Hub, start_hub, stop_hub

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def assert_all_gone(procs: list[psutil.Process], timeout: float = 20) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    assert not alive, f"still running after the hub stopped: {[(p.pid, p.cmdline()) for p in alive]}"


@pytest.fixture(scope="session")
def course_hub(tmp_path_factory) -> Hub:
    """`interplab hub` on a fresh course holding the test assignment `mini` (unbuilt: the hub builds
    it); demo accounts instructor, alice, bob, carol. Stopped with Ctrl-C at the end of the session,
    which must take every server, service and the proxy with it."""
    from conftest import TEST_ASSIGNMENTS, make_course  # the lead's course fixture helpers (tests/)

    tmp = tmp_path_factory.mktemp("hub")
    course = make_course(tmp, TEST_ASSIGNMENTS)
    hub = start_hub(course, tmp / "data", timeout=300)
    yield hub
    procs = descendants(hub.proc.pid)
    assert stop_hub(hub) == 0, hub.log()[-3000:]
    assert_all_gone(procs)


def ensure_chromium() -> tuple[str, str]:
    """Debian's chromium and chromium-driver, installed with apt-get when missing (CI runs on a
    clean machine as root). Never a downloaded browser."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return CHROMIUM, CHROMEDRIVER
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        # CI runs as root and installs them; elsewhere say exactly what is missing
        pytest.skip("the browser test needs Debian's chromium and chromium-driver: "
                    "run `apt-get install -y chromium chromium-driver` as root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with open("/tmp/interplab-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
            subprocess.run(["apt-get", "update"], env=env, check=True, timeout=900, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"],
                           env=env, check=True, timeout=1800, capture_output=True)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    return ensure_chromium()


@pytest.fixture
def browser(chromium):
    """Headless Chromium driven by Selenium through Debian's chromedriver (no Selenium Manager)."""
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium look for a driver online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    drv.set_page_load_timeout(120)
    yield drv
    drv.quit()
