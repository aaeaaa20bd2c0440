"""Start `streamlit run app.py` as a user would, for the browser tests (conftest.py) and the app
benchmark (benchmarks/bench_app.py): a free port, its own process group, ready once
/_stcore/health answers "ok". Also the Chromium flags and viewport both use.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# A closed network: keep Chromium from reaching out (and from hanging on it) at start-up.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}  # wide enough that Streamlit keeps the sidebar open


class AppServerError(RuntimeError):
    """The server exited or did not answer its health check in time; the message ends with its log."""


class AppServer:
    """`streamlit run app.py` in `app_dir` on a free port, its output in `log_path`; `close()` ends
    its whole process group (the server, the fork server of its runs and their workers). `cores`
    pins the server (and so its workers) to those CPU cores."""

    def __init__(self, app_dir: Path, log_path: Path, timeout: float = 60, env: dict[str, str] | None = None,
                 cores: set[int] | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [
            sys.executable, "-m", "streamlit", "run", "app.py",
            "--server.port", str(self.port),
            "--server.address", "127.0.0.1",
            "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
            "--server.runOnSave", "false",
        ]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=app_dir, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so that close() ends it and its children
                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
            )
        deadline = time.monotonic() + timeout
        while not _healthy(self.url):
            if self.process.poll() is not None:
                raise AppServerError(f"streamlit exited with status {self.process.returncode} before it was "
                                     f"healthy:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.close()
                raise AppServerError(f"streamlit did not answer {self.url}/_stcore/health within {timeout:.0f} s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().decode().strip() == "ok"
    except OSError:
        return False
