"""A study's independent runs as Ray (core) tasks: validation cases, sweep cells, checkpoints.

Nothing imports Ray until a study is asked to run on it (`--ray auto|ADDRESS`, or a study config's
"executor" key): `import llc_core` and every local study leave `ray` out of `sys.modules`.

A study hands `run_units` a list of Units: a stable key, made from the study and the run (never from
the worker that will run it), a module-level function and its payload. Each unit becomes one task;
its value (a JSON-able dict) comes back as it finishes and goes to `on_value` (the CLI's progress)
and to a Journal, one JSON line per finished run, so that a stopped or crashed study resumes without
running them again. Seeds live in the payload (the run's config), so a run gives the same numbers
wherever it runs (docs/CLUSTER.md). Tasks are retried `max_retries` times when their worker or node
dies; a small actor on the driver's node counts each unit's starts, so the outcome says what was
retried. A stop request (or Ctrl-C) cancels the tasks not finished and keeps those that are.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llc_core.config import ExecutorConfig
from llc_core.errors import LLCInputError

INSTALL_HINT = "install it with `pip install -r requirements-ray.txt`"
CONNECT_TIMEOUT_S = 20.0  # the most a bad address may cost before its one-line error
WAIT_S = 0.25  # how often the driver looks at stop requests while tasks run

# Run in a fresh interpreter, so that an address that accepts connections but is no Ray head (which
# makes ray.init retry for minutes) is given up after CONNECT_TIMEOUT_S.
GCS_PROBE = "import sys\nfrom ray._raylet import GcsClient\nGcsClient(address=sys.argv[1]).cluster_id\n"


@dataclass
class Unit:
    """One independent run: `fn(payload, shared)` on a worker gives a JSON-able dict. `fn` must be a
    module-level function of llc_core (workers import it by name); `key` names the run in the study."""

    key: str
    fn: Callable[[Any, Any], dict]
    payload: Any


@dataclass
class Outcome:
    """What came back: values by key (finished runs, resumed ones included) and what happened."""

    values: dict[str, dict] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # key -> why (a worker lost past its retries, ...)
    retried: list[str] = field(default_factory=list)  # keys whose task started more than once
    resumed: list[str] = field(default_factory=list)  # keys taken from the results directory
    cancelled: list[str] = field(default_factory=list)  # keys stopped before they finished
    nodes: dict[str, str] = field(default_factory=dict)  # key -> the node that ran it
    address: str = ""
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The part a study's report keeps: where it ran and what was retried, resumed, lost."""
        return {"executor": "ray", "address": self.address, "runs": len(self.values) + len(self.failed),
                "nodes_used": len(set(self.nodes.values())), "retried": list(self.retried),
                "resumed": list(self.resumed), "failed": dict(self.failed), "cancelled": list(self.cancelled)}


def unit_key(label: str, spec: Any) -> str:
    """"label#digest": the digest of the run's full description, so that a results directory written
    by a different study (another seed, another sampler) is never taken for this one."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return f"{label}#{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def ray_requested(executor: ExecutorConfig | None) -> bool:
    return executor is not None and executor.ray is not None


# --------------------------------------------------------------------------- results directory


class Journal:
    """One JSON line per finished run, appended as it finishes and flushed at once; a line cut short
    by a crash is skipped when read back."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        found = {}
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                found[record["key"]] = record["value"]
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def append(self, key: str, value: dict) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, "value": json_ready(value)}, allow_nan=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise LLCInputError(f"cannot write the results directory {str(self.path.parent)!r}: {err.strerror}") from None

    def reset(self) -> None:
        """Start afresh (a study that does not resume must not mix in an older run's lines)."""
        if self.path.is_file():
            self.path.unlink()


def json_ready(value: Any) -> Any:
    """NaN and ±inf as null, tuples as lists: what JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


# --------------------------------------------------------------------------- connecting


def import_ray():
    try:
        import ray
    except ImportError:
        raise LLCInputError(f"running on a Ray cluster needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None = "auto") -> str:
    """Attach this process to Ray (once; a process already attached stays so): "auto" joins a
    cluster started on this machine or named by RAY_ADDRESS, else starts Ray here alone; "local"
    always starts one here; "host:port" joins the cluster there. Returns the address in use. A bad
    address is one LLCInputError within about CONNECT_TIMEOUT_S, never a hang."""
    ray = import_ray()
    if ray.is_initialized():
        return current_address(ray)
    address = (address or "auto").strip()
    options = dict(include_dashboard=False, log_to_driver=False, logging_level="warning")
    if address == "auto" and os.environ.get("RAY_ADDRESS", "").strip():
        address = os.environ["RAY_ADDRESS"].strip()
    if address == "auto":
        try:
            ray.init(address="auto", **options)
        except ConnectionError:
            ray.init(**options)
    elif address == "local":
        ray.init(address="local", **options)
    else:
        check_address(address)
        try:
            ray.init(address=address, **options)
        except Exception as err:  # noqa: BLE001 - a version mismatch, a refused driver: one line
            raise LLCInputError(f"could not join the Ray cluster at {address}: {str(err).splitlines()[0][:300]}") from None
    return current_address(ray)


def current_address(ray) -> str:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # noqa: BLE001 - informative only
        return "local"


def check_address(address: str) -> None:
    """LLCInputError unless a Ray head answers at host:port within CONNECT_TIMEOUT_S."""
    if address.startswith("ray://"):
        raise LLCInputError(f"{address}: Ray Client addresses (ray://) are not supported; run the command on a node "
                            "of the cluster and give its head's address, e.g. --ray 10.0.0.1:6379 (docs/CLUSTER.md)")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LLCInputError(f"--ray {address!r}: give auto, local or a Ray head's host:port, e.g. 10.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=min(5.0, CONNECT_TIMEOUT_S)).close()
    except OSError as err:
        raise LLCInputError(f"no Ray cluster at {address}: {err.strerror or err} (start one with `ray start --head "
                            "--port=6379`, see docs/CLUSTER.md)") from None
    try:
        probe = subprocess.run([sys.executable, "-c", GCS_PROBE, address], capture_output=True,
                               timeout=CONNECT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        answered = probe.returncode == 0
    except subprocess.TimeoutExpired:
        answered = False
    if not answered:
        raise LLCInputError(f"{address} accepts connections but no Ray head answered there within "
                            f"{CONNECT_TIMEOUT_S:.0f} s: check the host and port (`ray status` on the head prints them)")


# --------------------------------------------------------------------------- on a worker


def execute(fn: Callable[[Any, Any], dict], payload: Any, shared: Any, key: str, attempts: Any, threads: int) -> dict:
    """A unit on a worker: torch threads set to the task's CPUs (no node is oversubscribed), its
    start counted, its value returned with the node that ran it."""
    import ray
    import torch

    torch.set_num_threads(max(1, threads))
    if attempts is not None:
        try:
            ray.get(attempts.started.remote(key))
        except ray.exceptions.RayError:  # the counter lost: the run matters more than its count
            pass
    return {"value": fn(payload, shared), "node": ray.get_runtime_context().get_node_id()}


class Attempts:
    """A Ray actor on the driver's node counting each unit's starts (more than one: retried). One
    serves every study of a driver (starting an actor costs a worker process); a study's keys carry
    its own token."""

    def __init__(self):
        self.starts: dict[str, int] = {}

    def started(self, key: str) -> int:
        self.starts[key] = self.starts.get(key, 0) + 1
        return self.starts[key]

    def counts(self, token: str) -> dict[str, int]:
        """The starts of one study's units, forgotten once read."""
        mine = {k: v for k, v in self.starts.items() if k.startswith(token)}
        for k in mine:
            del self.starts[k]
        return {k[len(token):]: v for k, v in mine.items()}


ACTORS: dict[str, Any] = {}  # the driver's Attempts actor, by Ray session and job


# --------------------------------------------------------------------------- the driver


@dataclass
class Submission:
    """The driver's view of the tasks in flight."""

    ray: Any
    refs: dict[Any, str]  # task ref -> unit key
    outcome: Outcome
    journal: Journal | None
    on_value: Callable[[str, dict, int, int], None] | None
    total: int


def run_units(units: list[Unit], executor: ExecutorConfig, *, shared: Any = None, journal: Journal | None = None,
              on_value: Callable[[str, dict, int, int], None] | None = None,
              stop: Callable[[], bool] | None = None) -> Outcome:
    """Every unit as a Ray task; `on_value(key, value, done, total)` as each finishes (resumed ones
    first). Returns when all are done, or at a stop request / Ctrl-C, which cancels the rest."""
    started = time.perf_counter()
    outcome = Outcome()
    keys = {u.key for u in units}
    if len(keys) != len(units):
        raise LLCInputError("two runs of this study have the same key: it cannot be split into tasks")
    found = journal.load() if journal is not None else {}
    todo = [u for u in units if u.key not in found]
    for unit in units:
        if unit.key in found:
            outcome.values[unit.key] = found[unit.key]
            outcome.resumed.append(unit.key)
            if on_value is not None:
                on_value(unit.key, found[unit.key], len(outcome.values), len(units))
    outcome.address = connect(executor.ray)
    if todo:
        ray = import_ray()
        attempts, token = attempts_actor(ray), f"{os.getpid()}.{time.monotonic_ns()}/"
        refs = submit(ray, [Unit(token + u.key, u.fn, u.payload) for u in todo], executor, shared, attempts)
        state = Submission(ray, {ref: key[len(token):] for ref, key in refs.items()}, outcome, journal, on_value,
                           len(units))
        collect(state, stop)
        try:
            counts = ray.get(attempts.counts.remote(token))
        except ray.exceptions.RayError:  # its node died: retries unknown, the next study starts another
            ACTORS.clear()
            counts = {}
        outcome.retried = [u.key for u in todo if counts.get(u.key, 0) > 1]
    outcome.wall_s = time.perf_counter() - started
    return outcome


def attempts_actor(ray):
    """The driver's Attempts actor, started on the first study, on the head node (which the cluster
    does not lose without losing everything)."""
    context = ray.get_runtime_context()
    job = f"{context.gcs_address}/{context.get_job_id()}/{context.get_node_id()}"  # a new session: a new node id
    if job not in ACTORS:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        heads = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})]
        here = heads[0] if heads else context.get_node_id()
        actor = ray.remote(Attempts).options(num_cpus=0, max_restarts=0,
                                             scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True))
        ACTORS.clear()
        ACTORS[job] = actor.remote()
    return ACTORS[job]


def submit(ray, todo: list[Unit], executor: ExecutorConfig, shared: Any, attempts) -> dict[Any, str]:
    task = ray.remote(execute).options(num_cpus=executor.num_cpus, num_gpus=executor.num_gpus,
                                       max_retries=executor.max_retries, retry_exceptions=False)
    shared_ref = ray.put(shared) if shared is not None else None
    threads = max(1, int(executor.num_cpus))
    return {task.remote(u.fn, u.payload, shared_ref, u.key, attempts, threads): u.key for u in todo}


def collect(state: Submission, stop: Callable[[], bool] | None) -> None:
    """Take each task's value as it finishes until none is left or a stop request (Ctrl-C included)."""
    ray, pending = state.ray, list(state.refs)
    try:
        while pending:
            if stop is not None and stop():
                break
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)
            for ref in ready:
                take(state, ref)
    except KeyboardInterrupt:
        sys.stderr.write(f"\nstopping: cancelling {len(pending)} unfinished run(s), keeping the finished ones\n")
    if pending:
        cancel(state, pending)


def take(state: Submission, ref) -> None:
    ray, outcome, key = state.ray, state.outcome, state.refs[ref]
    try:
        got = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        outcome.cancelled.append(key)
        return
    except ray.exceptions.RayError as err:  # a worker or node lost past its retries, an error in the run
        outcome.failed[key] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}"
        return
    outcome.values[key], outcome.nodes[key] = got["value"], got["node"]
    if state.journal is not None:
        state.journal.append(key, got["value"])
    if state.on_value is not None:
        state.on_value(key, got["value"], len(outcome.values), state.total)


def cancel(state: Submission, pending: list) -> None:
    """ray.cancel every unfinished task, then keep those that finished meanwhile."""
    ray = state.ray
    for ref in pending:
        ray.cancel(ref, force=False)
    ready, rest = ray.wait(pending, num_returns=len(pending), timeout=5.0)
    for ref in ready:
        take(state, ref)
    state.outcome.cancelled.extend(state.refs[ref] for ref in rest if state.refs[ref] not in state.outcome.cancelled)
