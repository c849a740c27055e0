"""Fixtures for the browser test: a running `streamlit run app.py` on a free local port."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")


def _tiny_model_builder():
    """build_tiny_model from tests/app/conftest.py (one definition for both suites)."""
    spec = importlib.util.spec_from_file_location(
        "spineseg_app_fixtures", REPO / "tests" / "app" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_model


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")


@pytest.fixture(scope="session")
def browser_available() -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (run scripts/install-browser.sh as root)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the playwright package is not installed (requirements-dev.txt)")
    if shutil.which("streamlit", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("streamlit is not installed next to this Python")


@contextlib.contextmanager
def running_app(env: dict[str, str], log_path: Path):
    """`streamlit run app.py` on a free local port with env; yields its URL, then stops it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.headless", "true",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(url, proc)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def app_url(browser_available, tmp_path_factory):
    """The app with the tiny untrained model, for the whole session."""
    weights, config = _tiny_model_builder()(tmp_path_factory.mktemp("tiny_model_e2e"))
    env = {**os.environ, "SPINESEG_WEIGHTS": str(weights), "SPINESEG_CONFIG": str(config)}
    env.pop("SPINE_DATA_DIR", None)
    with running_app(env, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


@pytest.fixture()
def start_app(browser_available):
    """running_app, for tests that need the app with their own environment."""
    return running_app


@pytest.fixture()
def page(browser_available):
    """A fresh headless Chromium page (Debian's browser, no downloads of its own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
            ],
        )  # fmt: skip
        context = browser.new_context(
            viewport={"width": 1400, "height": 1000}, accept_downloads=True
        )
        page = context.new_page()
        page.set_default_timeout(120_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
