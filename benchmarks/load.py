"""Many users at once: N page sessions segment the example scan while one segments a large
scan (512^3 float32), against a real `streamlit run app.py` driven by headless Chromium.

    python -m benchmarks.load [--sessions 4,8] [--size 512] [--json benchmarks/results/load.json]

For each N a fresh server (the bundled model) is started; its RSS (with any children) is
sampled every 0.5 s. One session first loads the model (warm-up) and closes; then the N + 1
sessions run together; then all close. Recorded: RSS after warm-up ("start"), the peak while
the sessions ran, RSS after they closed (at once, and after Streamlit's disconnected-session
TTL has passed and a new connection let it drop them), each session's time and any error on
its page. Not a test: nothing is asserted; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import common

MIB = 2**20
CHROMIUM = "/usr/bin/chromium"
PROBLEMS = ("Something went wrong", "Out of memory", "cannot be segmented", "is missing")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sampler(threading.Thread):
    """RSS of a process and its children every `period` s: peak and latest, in bytes."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc, self.period = psutil.Process(pid), period
        self.peak = self.latest = 0
        self.stopped = threading.Event()

    def rss(self) -> int:
        import psutil

        total = 0
        try:
            for p in [self.proc, *self.proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        except psutil.Error:
            pass
        return total

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            self.latest = self.rss()
            self.peak = max(self.peak, self.latest)

    def reset_peak(self) -> None:
        self.peak = self.latest = self.rss()


@contextlib.contextmanager
def server(log: Path, env: dict[str, str]):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=common.REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.read().strip() == b"ok":
                            break
                except OSError:
                    time.sleep(0.5)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def session(browser: Any, url: str, scan: Path | None, timeout_s: float) -> dict[str, Any]:
    """One user: open the page, bring the example (or upload scan), segment every slice,
    wait for the volume's downloads. Returns its times and the problems its page showed."""
    start = time.perf_counter()
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    out: dict[str, Any] = {"scan": "large" if scan else "example"}
    try:
        await page.goto(url)
        if scan is None:
            await page.get_by_role("button", name="Try an example scan").click()
        else:
            await page.get_by_role("button", name="Try an example scan").wait_for()
            await page.locator('input[type="file"]').set_input_files(str(scan))
        button = page.get_by_role("button", name=re.compile(r"Segment all \d+ slices"))
        await button.click()
        out["clicked_s"] = round(time.perf_counter() - start, 1)
        await page.get_by_role("button", name="Label map, volume (NIfTI)").wait_for()
        out["done_s"] = round(time.perf_counter() - start, 1)
        text = await page.locator("body").inner_text()
        out["problems"] = [p for p in PROBLEMS if p in text]
    except Exception as exc:  # recorded, not raised: the benchmark reports what happened
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        with contextlib.suppress(Exception):
            text = await page.locator("body").inner_text()
            out["problems"] = [p for p in PROBLEMS if p in text]
    out["context"] = context
    return out


async def drive(url: str, sampler: Sampler, n: int, scan: Path, timeout_s: float,
                ttl_s: float, result: dict[str, Any]) -> dict[str, Any]:
    """Fills result as it goes (what was measured stays if a later step fails)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        result["server_start_mib"] = round(sampler.rss() / MIB)
        warm = await session(browser, url, None, timeout_s)  # loads the model once
        await warm.pop("context").close()
        await asyncio.sleep(5)
        sampler.reset_peak()
        result["start_mib"] = round(sampler.latest / MIB)
        result["warm_up"] = warm
        t0 = time.perf_counter()
        runs = await asyncio.gather(
            session(browser, url, scan, timeout_s),
            *(session(browser, url, None, timeout_s) for _ in range(n)),
        )
        result["all_done_s"] = round(time.perf_counter() - t0, 1)
        result["peak_mib"] = round(sampler.peak / MIB)
        for run in runs:
            await run.pop("context").close()
        result["runs"] = runs
        await asyncio.sleep(10)
        result["after_close_mib"] = round(sampler.rss() / MIB)
        # Streamlit keeps a closed tab's session for reconnects for
        # server.disconnectedSessionTTL seconds and drops expired ones when sessions come
        # and go: wait past it, then open and close one page.
        await asyncio.sleep(ttl_s + 5)
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(timeout_s * 1000)
        await page.goto(url)
        await page.get_by_role("button", name="Try an example scan").wait_for()
        await context.close()
        await asyncio.sleep(10)
        result["after_ttl_mib"] = round(sampler.rss() / MIB)
        await browser.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="4,8", help="N values, comma-separated")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--scan", type=Path, help="the large scan (default: made, size^3)")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds per session")
    parser.add_argument("--ttl", type=float, default=None,
                        help="the server's disconnected-session TTL (default: its config)")
    parser.add_argument("--json", type=Path, default=common.BENCH_DIR / "results" / "load.json")
    args = parser.parse_args(argv)
    from streamlit import config as st_config

    ttl = args.ttl if args.ttl is not None else float(
        st_config.get_option("server.disconnectedSessionTTL"))
    summary: dict[str, Any] = {"machine": common.machine(), "ttl_s": ttl, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        scan = args.scan
        if scan is None:
            from benchmarks.memory import make_scan

            scan = Path(tmp) / f"large_{args.size}.nii.gz"
            summary["scan"] = make_scan(scan, args.size)
        env = common.bench_env()
        env.pop("SPINE_DATA_DIR", None)
        summary["slots"] = env.get("SPINESEG_SEGMENTATIONS", "1 (default)")
        for n in [int(v) for v in args.sessions.split(",") if v]:
            log = Path(tmp) / f"server_{n}.log"
            with server(log, env) as (url, proc):
                sampler = Sampler(proc.pid)
                sampler.start()
                run: dict[str, Any] = {"sessions": n}
                try:
                    asyncio.run(drive(url, sampler, n, scan, args.timeout, ttl, run))
                except Exception as exc:
                    run["error"] = f"{type(exc).__name__}: {exc}"[:300]
                    run["peak_mib_so_far"] = round(sampler.peak / MIB)
                    for item in run.get("runs", []):
                        item.pop("context", None)
                sampler.stopped.set()
            tail = log.read_text(errors="replace")[-2000:]
            run["server_log_tail"] = tail if re.search(r"Traceback|Error", tail) else ""
            summary["runs"].append(run)
            print({k: v for k, v in run.items() if k != "runs"}, flush=True)
            common.write_json(args.json, summary)
    common.write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
