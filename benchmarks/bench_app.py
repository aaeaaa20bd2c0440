"""What watching a run in the app costs it, against the CLI on the same config, as ratios measured in one run.

  app         `streamlit run app.py` on a free port (tests/e2e/app_server.py, as the browser tests
              start it), driven by headless Chromium through Playwright: open /estimate?<the config's
              query>, press Run, watch the live view until the result is on screen, download the
              result JSON and read its `chain_steps_per_second`. The run samples in a worker process
              (llc_core.execution.background, the default LLC_WORKER=process).
  app-thread  the same on a second server started with LLC_WORKER=thread: the run samples in a
              thread of the server, as before the worker process (leave it out: --workers process).
  cli         `python -m llc_core run -` in a subprocess, the same RunConfig on stdin, and the same
              field of the JSON it prints.
  cli@Nt      the same with OMP_NUM_THREADS=N, N the app's torch threads (background.worker_threads),
              when they differ from the CLI's: the cost of watching alone, the thread count aside.
              (Both set one thread fewer than torch's default now, so this variant no longer runs.)

Throughput is the engine's own figure in all: chain-steps over the wall time of its sampling loop,
model and data building excluded. The variants alternate (their order rotates every repetition);
printed are the median of the per-repetition ratios and the ratio of the fastest runs (other
users' load only ever slows a run down). Never compare absolute numbers across runs. Target: the
app's throughput within 10% of the CLI's, cli / app − 1 < 10%.

CPU time, far less sensitive to a busy machine, is given per 1,000 chain-steps, from the moment
sampling has begun (the CLI's first progress line; the app's progress bar counting steps) to the
end (the CLI's exit; the result on screen): the server's process tree (its threads: the fragments,
the event loop, the worker thread or the receiver of the worker process; the fork server and the
worker process), against the CLI process. The browser's CPU over the same time is shown beside it:
it draws the live view on this machine, as it would on a user's laptop. With --browser-core N the
browser (and this script) run on core N and the servers and the CLI on the other cores, which
separates the streaming's cost from the browser's drawing competing for the same cores.

The config is the Estimate page's default (potential x·w1·w2², ε = 1e-3, γ = 1, 4 chains, burn-in
1/4) with 10,000 steps instead of 2,000, so that a CLI run takes ~5-20 s depending on the load. The
resolved config in every result JSON is checked to be the same. Run from the repository root:

    .venv/bin/python benchmarks/bench_app.py [--steps 10000] [--chains 4] [--reps 5] [--workers process thread]
                                             [--browser-core N]

The Streamlit servers' logs go to test-output/bench-app-streamlit-{process,thread}.log.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import torch  # noqa: E402

from llc_core import ModelConfig, RunConfig, SamplerConfig  # noqa: E402
from llc_core.execution.background import worker_threads  # noqa: E402
from pages.settings import config_to_query  # noqa: E402
from app_server import CHROMIUM_ARGS, VIEWPORT, AppServer  # noqa: E402  (tests/e2e/app_server.py)

OVERHEAD_TARGET = 0.10
CHROMIUM = os.environ.get("LLC_CHROMIUM", "/usr/bin/chromium")
TICKS = os.sysconf("SC_CLK_TCK")
RUN_LIMIT_S = 900  # per app run
WORKERS = ("process", "thread")  # the app's run workers (llc_core.execution.background, LLC_WORKER)
APP_NAMES = {"process": "app", "thread": "app-thread"}


def bench_config(chains: int, steps: int) -> RunConfig:
    """The Estimate page's default model and sampler settings (potential x·w1·w2², ε = 1e-3, γ = 1,
    burn-in 1/4), with more steps so that a run is long enough to time."""
    return RunConfig(model=ModelConfig(kind="potential", powers=[1, 2]),
                     sampler=SamplerConfig(step_size=1e-3, localization=1.0, chains=chains, steps=steps, burnin=0.25),
                     device="cpu")


# ---------------------------------------------------------------------------------------------- /proc


def _process_table() -> dict[int, tuple[int, float]]:
    """pid → (parent pid, CPU seconds) of every process we can read: user + system, its own and that
    of its children that have exited and been waited for."""
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
        table[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / TICKS)
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
    """CPU seconds used by a set of processes between start() and stop(). Processes born in between
    count in full; one that exits in between (a run's worker process) counts through its parent's
    CPU of waited-for children, less what it had used at start(), as long as that parent is in the set."""

    def __init__(self, pids):
        self.pids = pids  # a callable: the table → the pids to count

    def start(self) -> None:
        table = _process_table()
        self._start = {pid: table[pid][1] for pid in self.pids(table)}

    def stop(self) -> float:
        table = _process_table()
        now = self.pids(table)
        gone = set(self._start) - now
        return (sum(table[pid][1] - self._start.get(pid, 0.0) for pid in now)
                - sum(self._start[pid] for pid in gone))


# ---------------------------------------------------------------------------------------------- the app


def _app_button(page, label: str):
    return page.locator('[data-testid="stButton"]').get_by_role("button", name=label, exact=True)


def app_run(browser, server: AppServer, query: str, download_dir: Path, servers: list[AppServer]) -> dict:
    """One run in a fresh browser context: open the page, press Run, wait for the result, read its JSON.
    The server's CPU is that of its process tree (its run's worker process included); the browser's
    is that of this process's other children, the servers (all of `servers`) left out."""
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
        browser_cpu = CpuMeter(lambda table: _subtree(table, own) - {own}.union(
            *(_subtree(table, other.process.pid) for other in servers)))
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


def cli_run(config: RunConfig, threads: int | None = None, cores: set[int] | None = None) -> dict:
    """`python -m llc_core run -` (with OMP_NUM_THREADS=threads when given, on `cores` when given);
    CPU time of the child from its first progress line (the first snapshot: model and data built,
    sampling begun) to its exit."""
    started = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    child = subprocess.Popen([sys.executable, "-m", "llc_core", "run", "-"], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
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
    parser.add_argument("--workers", nargs="+", choices=WORKERS, default=list(WORKERS),
                        help="the app's run workers to measure, one server each (default: process thread)")
    parser.add_argument("--browser-core", type=int, default=None, metavar="N",
                        help="run the browser (and this script) on CPU core N and the servers and the CLI on the "
                             "others, as when the browser is on the user's own machine: the cost of streaming "
                             "alone, without the browser's drawing competing for the cores")
    args = parser.parse_args()
    cores = None
    if args.browser_core is not None:
        available = os.sched_getaffinity(0)
        if args.browser_core not in available or len(available) < 2:
            sys.exit(f"--browser-core {args.browser_core}: needs one of cores {sorted(available)} and at least one other")
        cores = available - {args.browser_core}
        # the Playwright driver and Chromium are started from here below, so they inherit this core
        os.sched_setaffinity(0, {args.browser_core})
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"no Chromium at {CHROMIUM} (set LLC_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    config = bench_config(args.chains, args.steps)
    query = "&".join(f"{k}={v}" for k, v in config_to_query(config).items())
    chain_steps = args.chains * args.steps
    default_threads = len(cores) if cores else torch.get_num_threads()  # torch's default: the usable cores
    cli_threads = worker_threads(default_threads)  # as llc_core/cli/common.py sets them
    app_threads = worker_threads(default_threads)  # the worker process's
    apps = {APP_NAMES[worker]: worker for worker in args.workers}  # name → the server's LLC_WORKER
    clis = {"cli": None}  # name → OMP_NUM_THREADS of a CLI run
    if app_threads != cli_threads:  # the streaming cost alone: the CLI with the app's torch threads
        clis[f"cli@{app_threads}t"] = app_threads
    print(f"config: potential powers [1,2], {args.chains} chains × {args.steps:,} steps, ε 1e-3, γ 1, burn-in 0.25, "
          f"n {config.data.n:,}, device cpu; {args.reps} interleaved repetitions; CPU cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}; torch threads: CLI {cli_threads}, app {app_threads}; "
          + (f"browser on core {args.browser_core}, servers and CLI on cores {sorted(cores)}; " if cores else "")
          + "app variants: " + ", ".join(f"{name} (LLC_WORKER={worker})" for name, worker in apps.items()), flush=True)
    began = time.perf_counter()
    output = REPO / "test-output"
    output.mkdir(exist_ok=True)
    servers: dict[str, AppServer] = {}
    runs: dict[str, list[dict]] = {name: [] for name in [*apps, *clis]}
    try:
        for name, worker in apps.items():
            servers[name] = AppServer(REPO, output / f"bench-app-streamlit-{worker}.log", timeout=90,
                                      env={"LLC_WORKER": worker}, cores=cores)
        with sync_playwright() as p, tempfile.TemporaryDirectory() as downloads:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            warm = bench_config(args.chains, 200)  # imports, caches and JIT warm-up, for every variant
            for server in servers.values():
                app_run(browser, server, "&".join(f"{k}={v}" for k, v in config_to_query(warm).items()),
                        Path(downloads), list(servers.values()))
            cli_run(warm, cores=cores)
            names = list(runs)
            for rep in range(args.reps):
                for name in names[rep % len(names):] + names[:rep % len(names)]:  # the order rotates
                    if name in apps:
                        run = app_run(browser, servers[name], query, Path(downloads), list(servers.values()))
                        extra = f"server CPU {run['server_cpu']:.1f} s, browser CPU {run['browser_cpu']:.1f} s"
                    else:
                        run = cli_run(config, clis[name], cores)
                        extra = f"CPU from first snapshot {run['cpu']:.1f} s"
                    runs[name].append(run)
                    print(f"  rep {rep + 1} {name:>10}: {run['rate']:,.0f} chain-steps/s (sampling loop "
                          f"{run['loop_s']:.1f} s, click/launch to result {run['seconds']:.1f} s; {extra})", flush=True)
            browser.close()
    finally:
        for server in servers.values():
            server.close()
    report(runs, apps, clis, chain_steps, args.reps)
    print(f"total {time.perf_counter() - began:.0f} s; load average now {os.getloadavg()[0]:.1f}")


def report(runs: dict[str, list[dict]], apps: dict[str, str], clis: dict[str, int | None], chain_steps: int,
           reps: int) -> None:
    configs = {json.dumps(r["config"], sort_keys=True) for rs in runs.values() for r in rs}
    if len(configs) != 1:
        raise SystemExit(f"the app and the CLI ran different configs: {configs}")
    print()
    print("chain-steps/s (the engine's, over its sampling loop), median: "
          + ", ".join(f"{name} {statistics.median(r['rate'] for r in rs):,.0f}" for name, rs in runs.items()))
    cpu = {name: statistics.median(1e3 * r["server_cpu" if name in apps else "cpu"] / chain_steps for r in rs)
           for name, rs in runs.items()}
    print("CPU s per 1,000 chain-steps, median: "
          + ", ".join(f"{name}{'’s server' if name in apps else ''} {cpu[name]:.3f}" for name in runs))
    for name in apps:
        browser_cpu = statistics.median(1e3 * r["browser_cpu"] / chain_steps for r in runs[name])
        browser_cores = statistics.median(r["browser_cpu"] / r["watched_s"] for r in runs[name])
        print(f"  the browser drawing {name}'s live view: {browser_cpu:.3f} more ({browser_cores:.2f} cores while watched)")

    def row(slow: str, fast: str) -> float:
        ratios = [f["rate"] / s["rate"] for s, f in zip(runs[slow], runs[fast])]
        fastest = max(r["rate"] for r in runs[fast]) / max(r["rate"] for r in runs[slow])
        cpu_ratio = f"{cpu[slow] / cpu[fast]:>21.2f}"
        print(f"{fast + '/' + slow:>18}  {', '.join(f'{r:.3f}' for r in ratios):<40} {statistics.median(ratios):>7.3f} "
              f"{fastest:>13.3f} {cpu_ratio}")
        return statistics.median(ratios) - 1

    print(f"{'':>18}  {'per repetition':<40} {'median':>7} {'fastest runs':>13} {'its CPU / their CPU':>21}")
    overheads = {(app, cli): row(app, cli) for app in apps for cli in clis}
    if "app-thread" in apps and "app" in apps:
        gain = row("app-thread", "app")
        print(f"       the worker process runs {100 * gain:+.1f}% faster than the worker thread (median of {reps})")
    for app in apps:
        overhead = overheads[app, "cli"]
        print(f"[{'PASS' if overhead < OVERHEAD_TARGET else 'FAIL'}] watching the run in {app} costs "
              f"{100 * overhead:.1f}% of its throughput against the CLI (median of {reps}), "
              f"target < {100 * OVERHEAD_TARGET:.0f}%")
        for cli, threads in clis.items():
            if threads:
                print(f"       against the CLI with the app's {threads} torch thread(s) ({cli}): "
                      f"{100 * overheads[app, cli]:.1f}%")


if __name__ == "__main__":
    main()
