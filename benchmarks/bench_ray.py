"""What running a study's runs as Ray tasks costs and gains on this machine (docs/CLUSTER.md).

1. Overhead per task: the same validation runs of ≥ 10 s each, one after another here, and as Ray
   tasks on a local Ray of 1 CPU (so they also run one after another): (Ray wall − local wall) / runs,
   with Ray's start (ray.init) counted apart; and the round trip of an empty task.
2. Throughput: a 16-run validation suite on one local worker (run_suite, as the CLI without --ray)
   and on a simulated 2-node cluster (ray.cluster_utils.Cluster, 1 CPU per node), runs per minute.

    .venv/bin/python benchmarks/bench_ray.py [--quick] > benchmarks/results/bench_ray.txt

Every run uses one torch thread (the tasks' num_cpus = 1), so both sides compute the same numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llc_core.config import ExecutorConfig  # noqa: E402
from llc_core.execution import ray_backend  # noqa: E402
from llc_core.studies import validate  # noqa: E402

RAY_OPTIONS = dict(include_dashboard=False, log_to_driver=False, logging_level="warning")


def timed(work):
    started = time.perf_counter()
    out = work()
    return out, time.perf_counter() - started


def same_numbers(a: dict, b: dict) -> bool:
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    return strip(a["cases"]) == strip(b["cases"])


def overhead(runs: int, steps: int) -> None:
    import ray

    sampler = {"steps": steps, "chains": 4}
    local, local_s = timed(lambda: validate.run_suite("toy", None, count=runs, sampler=sampler))
    _, init_s = timed(lambda: ray.init(num_cpus=1, **RAY_OPTIONS))
    ray_backend.run_units([ray_backend.Unit("warm", empty, None)], ExecutorConfig(ray="auto"))  # a worker up
    empties = [ray_backend.Unit(f"e{i}", empty, None) for i in range(50)]
    _, empty_s = timed(lambda: ray_backend.run_units(empties, ExecutorConfig(ray="auto")))
    remote, remote_s = timed(lambda: validate.run_suite("toy", None, count=runs, sampler=sampler,
                                                        executor=ExecutorConfig(ray="auto")))
    ray.shutdown()
    per_run = local_s / runs
    per_task = (remote_s - local_s) / runs
    print(f"## 1. overhead per task ({runs} toy runs × {steps} steps × 4 chains, one at a time)")
    print(f"local (no Ray):             {local_s:7.1f} s, {per_run:.1f} s per run")
    print(f"Ray, 1 CPU, tasks:          {remote_s:7.1f} s (ray.init {init_s:.1f} s apart, once per study)")
    print(f"overhead per task:          {per_task:+7.2f} s = {100 * per_task / per_run:+.1f}% of a {per_run:.1f} s run "
          "(target < 5% for runs ≥ 10 s)")
    print(f"empty task round trip:      {1000 * empty_s / len(empties):7.1f} ms (50 tasks, a warm worker)")
    print(f"same numbers as local:      {same_numbers(local, remote)}")


def empty(payload, shared) -> dict:
    return {}


def throughput(count: int, steps: int) -> None:
    import ray
    from ray.cluster_utils import Cluster

    sampler = {"steps": steps, "chains": 2}
    local, local_s = timed(lambda: validate.run_suite("dln-1k", None, count=count, sampler=sampler))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, **RAY_OPTIONS)
    remote, remote_s = timed(lambda: validate.run_suite("dln-1k", None, count=count, sampler=sampler,
                                                        executor=ExecutorConfig(ray="auto")))
    nodes = remote["summary"]["executor"]["nodes_used"]
    ray.shutdown()
    cluster.shutdown()
    print(f"\n## 2. throughput: dln-1k, {count} runs × {steps} steps × 2 chains")
    print(f"one local worker:           {local_s:7.1f} s, {60 * count / local_s:5.1f} runs/min")
    print(f"2-node cluster, 1 CPU each: {remote_s:7.1f} s, {60 * count / remote_s:5.1f} runs/min "
          f"(×{local_s / remote_s:.2f}; {nodes} nodes used; cold workers included, ray.init and cluster start not)")
    print(f"same numbers as local:      {same_numbers(local, remote)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, to check the script itself")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import ray

    print(f"# bench_ray: Ray {ray.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPU cores (shared), {time.strftime('%Y-%m-%d')}")
    overhead(runs=2 if args.quick else 4, steps=500 if args.quick else 8000)
    throughput(count=4 if args.quick else 16, steps=100 if args.quick else 300)


if __name__ == "__main__":
    main()
