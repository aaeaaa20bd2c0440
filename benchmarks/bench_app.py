"""What the app's live view costs a run, against the CLI on the same config, as ratios measured in one run.

  app   `streamlit run app.py` on a free port, driven by headless Chromium (Playwright): open
        /estimate?<the config's query>, press Run, wait for the result, download the result JSON
        and read its `chain_steps_per_second`.
  cli   `python -m llc_core run -` in a subprocess, the same RunConfig on stdin; the same field of
        the JSON it prints.

Both figures are the engine's own: chain-steps over the wall time of its sampling loop, model and
data building excluded. The two variants alternate (their order flips every repetition) and the
median of the per-repetition ratios is printed, so load from other users mostly cancels; never
compare absolute numbers across runs. Target: the app's throughput within 10% of the CLI's, i.e.
cli / app − 1 < 10%.

CPU time, far less sensitive to a busy machine, is given per 1,000 chain-steps: the server's
process (all its threads: the worker, the polling fragment, Tornado) and the browser's processes
from the click on Run until the result is on screen, against the CLI process from its first
snapshot to its exit. Their difference is what drawing the live view costs.

The result JSON's resolved config is checked to be the same for both variants. Run from the
repository root:

    .venv/bin/python benchmarks/bench_app.py [--steps 10000] [--chains 4] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from llc_core import ModelConfig, RunConfig, SamplerConfig  # noqa: E402
from pages.common import torch_threads  # noqa: E402
from pages.settings import config_to_query  # noqa: E402

OVERHEAD_TARGET = 0.10
CHROMIUM = os.environ.get("LLC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1400, "height": 1000}  # as the e2e tests: the sidebar stays open
TICKS = os.sysconf("SC_CLK_TCK")
RUN_LIMIT_S = 900


def bench_config(chains: int, steps: int) -> RunConfig:
    """The Estimate page's default model and sampler settings (potential x·w1·w2², ε = 1e-3, γ = 1,
    burn-in 1/4), with more steps so that a run is long enough to time."""
    return RunConfig(model=ModelConfig(kind="potential", powers=[1, 2]),
                     sampler=SamplerConfig(step_size=1e-3, localization=1.0, chains=chains, steps=steps, burnin=0.25),
                     device="cpu")


# ---------------------------------------------------------------------------------------------- /proc


def _process_table() -> dict[int, tuple[int, float]]:
    """pid → (parent pid, CPU seconds, user + system) of every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    return table


def _subtree(table: dict[int, tuple[int, float]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


class CpuMeter:
    """CPU seconds used by a set of processes between start() and stop(); processes born in between
    count in full, those that exit in between are lost (none do here)."""

    def __init__(self, pids):
        self.pids = pids  # a callable: the table → the pids to count

    def start(self) -> None:
        table = _process_table()
        self._start = {pid: table[pid][1] for pid in self.pids(table)}

    def stop(self) -> float:
        table = _process_table()
        return sum(table[pid][1] - self._start.get(pid, 0.0) for pid in self.pids(table))


# ---------------------------------------------------------------------------------------------- the app


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


class AppServer:
    """`streamlit run app.py` as the e2e tests start it, in its own process group."""

    def __init__(self, log_path: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
                   "--server.address", "127.0.0.1", "--server.headless", "true",
                   "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
                   "--server.runOnSave", "false"]
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + 90
        while not _healthy(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"streamlit did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.25)

    def close(self) -> None:
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


def _app_button(page, label: str):
    return page.locator('[data-testid="stButton"]').get_by_role("button", name=label, exact=True)


def app_run(browser, server: AppServer, query: str, download_dir: Path) -> dict:
    """One run in a fresh browser context: open the page, press Run, wait for the result, read its JSON."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/estimate?{query}", wait_until="domcontentloaded")
        run = _app_button(page, "Run")
        run.wait_for(state="visible")
        page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(state="attached")
        page.wait_for_timeout(500)

        own = os.getpid()
        server_cpu = CpuMeter(lambda table: _subtree(table, server.process.pid))
        browser_cpu = CpuMeter(lambda table: _subtree(table, own) - _subtree(table, server.process.pid) - {own})
        server_cpu.start()
        browser_cpu.start()
        started = time.perf_counter()
        run.click()
        _app_button(page, "Stop").wait_for(state="visible")
        result_heading = page.get_by_text("λ̂ =", exact=False)
        deadline = time.monotonic() + RUN_LIMIT_S
        while result_heading.count() == 0 or _app_button(page, "Stop").count() > 0:
            if page.locator('[data-testid="stException"]').count():
                raise RuntimeError(f"the app shows an exception: {page.locator('[data-testid=stException]').first.inner_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no result within {RUN_LIMIT_S} s")
            page.wait_for_timeout(100)
        seconds = time.perf_counter() - started
        server_seconds, browser_seconds = server_cpu.stop(), browser_cpu.stop()

        with page.expect_download() as download:
            page.get_by_role("button", name="Download result (JSON)").click()
        path = download_dir / f"app-{time.monotonic_ns()}.json"
        download.value.save_as(path)
        result = json.loads(path.read_text())
    finally:
        context.close()
    return {"rate": result["chain_steps_per_second"], "loop_s": result["wall_time_s"], "seconds": seconds,
            "server_cpu": server_seconds, "browser_cpu": browser_seconds, "config": result["config"],
            "status": "partial" if result["partial"] else "done"}


# ---------------------------------------------------------------------------------------------- the CLI


def cli_run(config: RunConfig, threads: int | None = None) -> dict:
    """`python -m llc_core run -` (with OMP_NUM_THREADS=threads when given); CPU time of the child
    from its first progress line (the first snapshot: model and data built, sampling begun) to its exit."""
    started = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    child = subprocess.Popen([sys.executable, "-m", "llc_core", "run", "-"], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    child.stdin.write(config.to_json().encode())
    child.stdin.close()
    child.stdin = None  # written and closed: communicate() below only reads
    first = child.stderr.read(1)  # the progress bar's first "\r": sampling has started
    cpu_at_first = _process_table().get(child.pid, (0, 0.0))[1] if first else 0.0
    usage_before = os.times()
    output, _ = child.communicate()
    usage = os.times()
    if child.returncode != 0:
        raise RuntimeError(f"the CLI exited with status {child.returncode}")
    cpu = (usage.children_user - usage_before.children_user) + (usage.children_system - usage_before.children_system)
    result = json.loads(output)
    return {"rate": result["chain_steps_per_second"], "loop_s": result["wall_time_s"],
            "seconds": time.perf_counter() - started, "cpu": cpu - cpu_at_first, "config": result["config"]}


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000, help="steps per chain (default 10000: ~10-20 s on the CLI)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each variant (default 3)")
    args = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"no Chromium at {CHROMIUM} (set LLC_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    config = bench_config(args.chains, args.steps)
    query = "&".join(f"{k}={v}" for k, v in config_to_query(config).items())
    chain_steps = args.chains * args.steps
    cli_threads = torch.get_num_threads()
    app_threads = torch_threads(cli_threads)
    variants = {"app": None, "cli": None}  # name → OMP_NUM_THREADS of a CLI run
    if app_threads != cli_threads:  # the streaming cost alone: the CLI with the app's torch threads
        variants[f"cli@{app_threads}t"] = app_threads
    print(f"config: potential powers [1,2], {args.chains} chains × {args.steps:,} steps, ε 1e-3, γ 1, burn-in 0.25, "
          f"n {config.data.n:,}, device cpu; {args.reps} interleaved repetitions; CPU cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}; torch threads: CLI {cli_threads}, app {app_threads}", flush=True)
    began = time.perf_counter()
    output = REPO / "test-output"
    output.mkdir(exist_ok=True)
    server = AppServer(output / "bench-app-streamlit.log")
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    try:
        with sync_playwright() as p, tempfile.TemporaryDirectory() as downloads:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            warm = bench_config(args.chains, 200)  # imports, caches and JIT warm-up, for both
            app_run(browser, server, "&".join(f"{k}={v}" for k, v in config_to_query(warm).items()), Path(downloads))
            cli_run(warm)
            names = list(variants)
            for rep in range(args.reps):
                for name in names[rep % len(names):] + names[:rep % len(names)]:  # the order rotates
                    if name == "app":
                        run = app_run(browser, server, query, Path(downloads))
                        extra = f"server CPU {run['server_cpu']:.1f} s, browser CPU {run['browser_cpu']:.1f} s"
                    else:
                        run = cli_run(config, variants[name])
                        extra = f"CPU from first snapshot {run['cpu']:.1f} s"
                    runs[name].append(run)
                    print(f"  rep {rep + 1} {name:>7}: {run['rate']:,.0f} chain-steps/s (sampling loop "
                          f"{run['loop_s']:.1f} s, click/launch to result {run['seconds']:.1f} s; {extra})", flush=True)
            browser.close()
    finally:
        server.close()

    configs = {json.dumps(r["config"], sort_keys=True) for rs in runs.values() for r in rs}
    if len(configs) != 1:
        raise SystemExit(f"the app and the CLI ran different configs: {configs}")
    print()
    print("chain-steps/s (the engine's, over its sampling loop), median: "
          + ", ".join(f"{name} {statistics.median(r['rate'] for r in rs):,.0f}" for name, rs in runs.items()))
    cpu = {name: statistics.median(1e3 * r["server_cpu" if name == "app" else "cpu"] / chain_steps for r in rs)
           for name, rs in runs.items()}
    browser_cpu = statistics.median(1e3 * r["browser_cpu"] / chain_steps for r in runs["app"])
    print(f"CPU s per 1,000 chain-steps, median: app's server {cpu['app']:.3f} (its browser {browser_cpu:.3f} more), "
          + ", ".join(f"{name} {cpu[name]:.3f}" for name in runs if name != "app"))
    overheads = {}
    for name in runs:
        if name == "app":
            continue
        ratios = [c["rate"] / a["rate"] for a, c in zip(runs["app"], runs[name])]
        overheads[name] = statistics.median(ratios) - 1
        print(f"{name}/app per repetition: {', '.join(f'{r:.3f}' for r in ratios)}; median {1 + overheads[name]:.3f}; "
              f"server CPU / {name} CPU {cpu['app'] / cpu[name]:.2f}")
    overhead = overheads["cli"]
    print(f"[{'PASS' if overhead < OVERHEAD_TARGET else 'FAIL'}] the app's streaming costs {100 * overhead:.1f}% "
          f"of throughput over the CLI (median of {args.reps}), target < {100 * OVERHEAD_TARGET:.0f}%")
    if len(overheads) > 1:
        name = next(n for n in overheads if n != "cli")
        print(f"       against the CLI with the app's {app_threads} torch thread(s): {100 * overheads[name]:.1f}%")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
