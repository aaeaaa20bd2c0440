"""What watching a run in the app costs it, against the CLI on the same config, as ratios measured in one run.

  app     `streamlit run app.py` on a free port (as tests/e2e/conftest.py starts it), driven by
          headless Chromium through Playwright: open /estimate?<the config's query>, press Run,
          watch the live view until the result is on screen, download the result JSON and read
          its `chain_steps_per_second`.
  cli     `python -m llc_core run -` in a subprocess, the same RunConfig on stdin, and the same
          field of the JSON it prints.
  cli@Nt  the same with OMP_NUM_THREADS=N, N the app's torch threads (pages/common.torch_threads),
          when they differ from torch's default: the cost of watching alone, the thread count aside.

Throughput is the engine's own figure in both: chain-steps over the wall time of its sampling loop,
model and data building excluded. The variants alternate (their order rotates every repetition);
printed are the median of the per-repetition ratios and the ratio of the fastest runs (other
users' load only ever slows a run down). Never compare absolute numbers across runs. Target: the
app's throughput within 10% of the CLI's, cli / app − 1 < 10%.

CPU time, far less sensitive to a busy machine, is given per 1,000 chain-steps, from the moment
sampling has begun (the CLI's first progress line; the app's progress bar counting steps) to the
end (the CLI's exit; the result on screen): the server process, all its threads (the worker, the
fragments, the event loop), against the CLI process. The browser's CPU over the same time is
shown beside it: it draws the live view on this machine, as it would on a user's laptop.

The config is the Estimate page's default (potential x·w1·w2², ε = 1e-3, γ = 1, 4 chains, burn-in
1/4) with 10,000 steps instead of 2,000, so that a CLI run takes ~5-20 s depending on the load. The
resolved config in every result JSON is checked to be the same. Run from the repository root:

    .venv/bin/python benchmarks/bench_app.py [--steps 10000] [--chains 4] [--reps 5]

The Streamlit server's log goes to test-output/bench-app-streamlit.log.
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
RUN_LIMIT_S = 900  # per app run


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
        result_heading = page.get_by_text("λ̂ =", exact=False)
        stop = _app_button(page, "Stop")
        started = time.perf_counter()
        run.click()
        stop.wait_for(state="visible")
        # Sampling has begun once the progress bar counts steps: the CPU meters start there, as the
        # CLI's does at its first progress line. Playwright's waits poll sparingly (every 0.5 s
        # after the first few tries), so that the benchmark itself adds little to the browser's work.
        sampling = page.locator('[data-testid="stProgress"]').filter(has_text="Step ")
        sampling.or_(result_heading).first.wait_for(state="visible")
        server_cpu.start()
        browser_cpu.start()
        sampling_seen = time.perf_counter()
        try:
            stop.wait_for(state="detached", timeout=RUN_LIMIT_S * 1000)
            result_heading.first.wait_for(state="visible")
        except Exception:
            errors = page.locator('[data-testid="stException"]')
            if errors.count():
                raise RuntimeError(f"the app shows an exception: {errors.first.inner_text()}") from None
            raise
        seconds = time.perf_counter() - started
        watched = time.perf_counter() - sampling_seen
        server_seconds, browser_seconds = server_cpu.stop(), browser_cpu.stop()

        with page.expect_download() as download:
            page.get_by_role("button", name="Download result (JSON)").click()
        path = download_dir / f"app-{time.monotonic_ns()}.json"
        download.value.save_as(path)
        result = json.loads(path.read_text())
    finally:
        context.close()
    if result["partial"]:
        raise RuntimeError("the app's run ended early (partial result)")
    return {"rate": result["chain_steps_per_second"], "loop_s": result["wall_time_s"], "seconds": seconds,
            "server_cpu": server_seconds, "browser_cpu": browser_seconds, "watched_s": watched,
            "config": result["config"]}


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
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each variant (default 5)")
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
    browser_cores = statistics.median(r["browser_cpu"] / r["watched_s"] for r in runs["app"])
    print(f"CPU s per 1,000 chain-steps, median: app's server {cpu['app']:.3f}, "
          + ", ".join(f"{name} {cpu[name]:.3f}" for name in runs if name != "app")
          + f"; the browser drawing the live view {browser_cpu:.3f} more ({browser_cores:.2f} cores while watched)")
    overheads = {}
    print(f"{'':>7}  {'per repetition':<36} {'median':>7} {'fastest runs':>13} {'server CPU / its CPU':>21}")
    for name in runs:
        if name == "app":
            continue
        ratios = [c["rate"] / a["rate"] for a, c in zip(runs["app"], runs[name])]
        overheads[name] = statistics.median(ratios) - 1
        fastest = max(r["rate"] for r in runs[name]) / max(r["rate"] for r in runs["app"])
        print(f"{name + '/app':>11}  {', '.join(f'{r:.3f}' for r in ratios):<32} {1 + overheads[name]:>7.3f} "
              f"{fastest:>13.3f} {cpu['app'] / cpu[name]:>21.2f}")
    overhead = overheads.pop("cli")
    print(f"[{'PASS' if overhead < OVERHEAD_TARGET else 'FAIL'}] watching the run in the app costs "
          f"{100 * overhead:.1f}% of its throughput against the CLI (median of {args.reps}), "
          f"target < {100 * OVERHEAD_TARGET:.0f}%")
    for name, value in overheads.items():
        print(f"       against the CLI with the app's {variants[name]} torch thread(s) ({name}): {100 * value:.1f}%")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
