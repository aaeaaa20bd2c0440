"""A study's independent runs as Ray (core) tasks or actors: validation cases, sweep cells, checkpoints, chain groups.

Nothing imports Ray until a study is asked to run on it (`--ray auto|ADDRESS`, a study config's
"executor" key, the app's "Run on" setting): `import llc_core` and every local study leave `ray` out
of `sys.modules`.

A study hands `run_units` a list of Units (execution/units.py): a stable key, made from the study and
the run (never from the worker that will run it), a module-level function and its payload. Each unit
runs as a Ray task, or, with actors (one per GPU by default when the cluster has GPUs), on one of a
few long-lived actors that keep the study's shared object (model and data) resident, on their GPU,
across the runs they are given. Each value (a JSON-able dict) comes back as it finishes and goes to
`on_value` (the CLI's progress, the app's live view) and to a Journal, one JSON line per finished run,
so that a stopped or crashed study resumes without running them again. Seeds live in the payload (the
run's config), so a run gives the same numbers wherever it runs (docs/CLUSTER.md). Tasks (and actors)
are retried `max_retries` times when their worker or node dies; a small actor on the head node counts
each unit's starts, so the outcome says what was retried. A stop request (or Ctrl-C) cancels the
runs not finished and keeps those that are. Each task or actor sets its torch threads to its CPUs.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from llc_core.config import ExecutorConfig
from llc_core.errors import LLCInputError
from llc_core.execution.units import Journal, Outcome, Unit, json_ready, take_resumed, unit_key

__all__ = ["INSTALL_HINT", "Journal", "Outcome", "Unit", "address_problem", "connect", "json_ready", "ray_requested",
           "run_units", "unit_key"]

INSTALL_HINT = "install it with `pip install -r requirements-ray.txt`"
CONNECT_TIMEOUT_S = 20.0  # the most a bad address may cost before its one-line error
WAIT_S = 0.25  # how often the driver looks at stop requests while tasks run

# Run in a fresh interpreter, so that an address that accepts connections but is no Ray head (which
# makes ray.init retry for minutes) is given up after CONNECT_TIMEOUT_S.
GCS_PROBE = "import sys\nfrom ray._raylet import GcsClient\nGcsClient(address=sys.argv[1]).cluster_id\n"


def ray_requested(executor: ExecutorConfig | None) -> bool:
    return executor is not None and executor.ray is not None


# --------------------------------------------------------------------------- connecting


def ray_installed() -> bool:
    """Whether Ray can be imported, without importing it."""
    return importlib.util.find_spec("ray") is not None


def import_ray():
    try:
        import ray
    except ImportError:
        raise LLCInputError(f"running on a Ray cluster needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def parse_address(address: Any) -> str:
    """The address as given, checked for its form only (nothing is contacted): "auto", "local" or a
    Ray head's host:port. LLCInputError with one line otherwise."""
    text = str(address or "").strip()
    if text in ("auto", "local"):
        return text
    if text.startswith("ray://"):
        raise LLCInputError(f"{text}: Ray Client addresses (ray://) are not supported; run the study on a node "
                            "of the cluster and give its head's address, e.g. 10.0.0.1:6379 (docs/CLUSTER.md)")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in host):
        raise LLCInputError(f"Ray address {text!r}: give auto, local or a Ray head's host:port, e.g. 10.0.0.1:6379")
    return text


def address_problem(address: Any) -> str | None:
    """What is wrong with running on Ray at `address` before anything is contacted (its form, Ray not
    installed), in one line; None when nothing is. Imports no Ray (the app's "Run on" setting)."""
    try:
        parse_address(address)
    except LLCInputError as err:
        return str(err)
    if not ray_installed():
        return f"Ray is not installed here: {INSTALL_HINT}"
    return None


def connect(address: str | None = "auto") -> str:
    """Attach this process to Ray (once; a process already attached stays so): "auto" joins a
    cluster started on this machine or named by RAY_ADDRESS, else starts Ray here alone; "local"
    always starts one here; "host:port" joins the cluster there. Returns the address in use. A bad
    address is one LLCInputError within about CONNECT_TIMEOUT_S, never a hang."""
    address = parse_address(address or "auto")
    ray = import_ray()
    if ray.is_initialized():
        current = current_address(ray)
        if address not in ("auto", "local") and not same_address(address, current):
            raise LLCInputError(f"this process is already attached to the Ray cluster at {current}: restart it "
                                f"to run on the one at {address}")
        return current
    options = dict(include_dashboard=False, log_to_driver=False, logging_level="warning")
    if address == "auto" and os.environ.get("RAY_ADDRESS", "").strip():
        address = parse_address(os.environ["RAY_ADDRESS"].strip())
    if address == "auto":
        try:
            init_here(ray, address="auto", **options)
        except ConnectionError:
            init_here(ray, **options)
    elif address == "local":
        init_here(ray, address="local", **options)
    else:
        check_address(address)
        try:
            init_here(ray, address=address, **options)
        except Exception as err:  # noqa: BLE001 - a version mismatch, a refused driver: one line
            raise LLCInputError(f"could not join the Ray cluster at {address}: {str(err).splitlines()[0][:300]}") from None
    return current_address(ray)


def init_here(ray, **options) -> None:
    """ray.init, from a thread that lives as long as this process. The Ray processes that ray.init
    starts die with the thread that started them (Linux's parent-death signal is per thread), and a
    study often runs in a worker thread that ends with it (the app's jobs, the CLI's Ctrl-C wrapper):
    started there, Ray would vanish with the first study."""
    if threading.current_thread() is threading.main_thread():
        ray.init(**options)
        return
    box: dict[str, BaseException] = {}
    ready = threading.Event()

    def keep() -> None:
        try:
            ray.init(**options)
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = err
        ready.set()
        if "error" not in box:
            threading.Event().wait()  # never returns: Ray's processes live as long as this thread

    threading.Thread(target=keep, name="llc-ray", daemon=True).start()
    ready.wait()
    if "error" in box:
        raise box["error"]


def current_address(ray) -> str:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # noqa: BLE001 - informative only
        return "local"


def same_address(a: str, b: str) -> bool:
    def resolved(text: str) -> tuple[str, str]:
        host, _, port = text.rpartition(":")
        try:
            return socket.gethostbyname(host), port
        except OSError:
            return host, port

    return resolved(a) == resolved(b)


def check_address(address: str) -> None:
    """LLCInputError unless a Ray head answers at host:port within CONNECT_TIMEOUT_S."""
    address = parse_address(address)
    host, _, port = address.rpartition(":")
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
    """A unit as a task: torch threads set to the task's CPUs (no node is oversubscribed), its start
    counted, its value returned with the node that ran it."""
    import torch

    torch.set_num_threads(max(1, threads))
    return counted(fn, payload, shared, key, attempts)


def counted(fn: Callable[[Any, Any], dict], payload: Any, shared: Any, key: str, attempts: Any) -> dict:
    import ray

    if attempts is not None:
        try:
            ray.get(attempts.started.remote(key))
        except ray.exceptions.RayError:  # the counter lost: the run matters more than its count
            pass
    return {"value": fn(payload, shared), "node": ray.get_runtime_context().get_node_id()}


class Resident:
    """A long-lived Ray actor for one study: its torch threads set to its CPUs once, the study's shared
    object (model, data) fetched on its first run, placed on its device (its GPU when Ray gave it one)
    and kept there for every later run it is given. (The shared object comes with each call as a
    reference, fetched only when new to the actor: one started in place of an actor lost with its node
    fetches it on its first call.)"""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.device = resident_device()
        self.shared: Any = None
        self.shared_id: str | None = None
        self.runs = 0

    def run(self, fn: Callable[[Any, Any], dict], payload: Any, shared: list, key: str, attempts: Any) -> dict:
        """`shared`: [an ObjectRef of the study's shared object, or None], fetched once."""
        import ray

        ref = shared[0]
        if ref is not None and ref.hex() != self.shared_id:
            self.shared, self.shared_id = place(ray.get(ref), self.device), ref.hex()
        self.runs += 1
        out = counted(fn, payload, self.shared, key, attempts)
        return {**out, "device": str(self.device), "runs_here": self.runs}


def resident_device():
    """cuda when Ray assigned this worker a GPU and torch sees one, else the CPU."""
    import ray
    import torch

    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def place(value: Any, device) -> Any:
    """`value` with its tensors and modules on `device` (dicts, lists, tuples and dataclasses looked
    into); on the CPU, `value` itself, so that an actor computes exactly what a task does."""
    import torch

    if device.type == "cpu":
        return value
    if isinstance(value, (torch.Tensor, torch.nn.Module)):
        return value.to(device)
    if isinstance(value, dict):
        return {k: place(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(place(v, device) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        moved = copy.copy(value)
        for f in dataclasses.fields(value):
            object.__setattr__(moved, f.name, place(getattr(value, f.name), device))
        return moved
    return value


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


@dataclass(frozen=True)
class WorkerPlan:
    """What each run asks of the cluster, and whether the runs go to long-lived actors."""

    num_cpus: float
    num_gpus: float
    actors: int  # 0: a task per run
    threads: int  # torch threads per run: its CPUs


def worker_plan(ray, executor: ExecutorConfig, runs: int) -> WorkerPlan:
    """num_gpus unset: one GPU per run when the cluster has GPUs, else none; actors unset: one actor
    per GPU share when the cluster has GPUs (so that model and data stay on the GPU), else a task per
    run. LLCInputError when no node could ever run one (more CPUs or GPUs than any node has)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    gpus = sum(float(n.get("GPU", 0)) for n in nodes)
    num_gpus = executor.num_gpus if executor.num_gpus is not None else (1.0 if gpus else 0.0)
    num_cpus = float(executor.num_cpus)
    if not any(float(n.get("CPU", 0)) >= num_cpus and float(n.get("GPU", 0)) >= num_gpus for n in nodes):
        have = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in nodes) or "none"
        raise LLCInputError(f"no node of the Ray cluster can run a run asking for {num_cpus:g} CPU(s) and "
                            f"{num_gpus:g} GPU(s) (its nodes: {have}): lower --task-cpus / --task-gpus")
    if executor.actors is not None:
        actors = executor.actors
    else:
        actors = int(gpus // num_gpus) if gpus and num_gpus else 0
    return WorkerPlan(num_cpus, num_gpus, min(actors, runs), max(1, int(num_cpus)))


@dataclass
class Submission:
    """The driver's view of the runs in flight: unit keys (with the study's token) by ref, and for
    actors the queue of units still to hand out and which actor holds which ref."""

    ray: Any
    token: str  # the study's prefix of the keys the Attempts actor counts
    outcome: Outcome
    journal: Journal | None
    on_value: Callable[[str, dict, int, int], None] | None
    total: int
    refs: dict[Any, str] = field(default_factory=dict)  # ref -> token + unit key
    queue: list[Unit] = field(default_factory=list)  # actors: units not handed out yet (keys with the token)
    busy: dict[Any, Any] = field(default_factory=dict)  # actors: ref -> the actor running it
    running: dict[Any, Unit] = field(default_factory=dict)  # actors: ref -> the unit it runs
    actors: list = field(default_factory=list)  # actors still alive
    give: Callable[[Any, Unit], Any] | None = None  # actors: hand a unit to an actor, its ref
    new_actor: Callable[[], Any] | None = None  # actors: start one more (in place of one lost)
    max_retries: int = 0  # actors: how often a unit whose actor was lost is handed out again
    tries: dict[str, int] = field(default_factory=dict)  # actors: unit key -> times handed out again

    def key(self, ref) -> str:
        return self.refs[ref][len(self.token):]


def run_units(units: list[Unit], executor: ExecutorConfig, *, shared: Any = None, journal: Journal | None = None,
              on_value: Callable[[str, dict, int, int], None] | None = None,
              stop: Callable[[], bool] | None = None) -> Outcome:
    """Every unit as a Ray task or on an actor; `on_value(key, value, done, total)` as each finishes
    (resumed ones first). Returns when all are done, or at a stop request / Ctrl-C, which cancels
    the rest."""
    started = time.perf_counter()
    outcome = Outcome()
    todo = take_resumed(units, journal, outcome, on_value)
    outcome.address = connect(executor.ray)
    if todo:
        ray = import_ray()
        plan = worker_plan(ray, executor, len(todo))
        attempts = attempts_actor(ray)
        state = Submission(ray, f"{os.getpid()}.{time.monotonic_ns()}/", outcome, journal, on_value, len(units))
        tagged = [Unit(state.token + u.key, u.fn, u.payload) for u in todo]
        shared_ref = ray.put(shared) if shared is not None else None
        try:
            if plan.actors:
                start_actors(state, plan, executor, shared_ref, attempts)
                state.queue = tagged
                for actor in list(state.actors):
                    hand_out(state, actor)
                outcome.workers = f"{plan.actors} actor(s)"
            else:
                submit(state, tagged, plan, executor, shared_ref, attempts)
            collect(state, stop)
        finally:
            for actor in state.actors:
                ray.kill(actor, no_restart=True)  # the study is over: free its CPUs and GPUs
        try:
            counts = ray.get(attempts.counts.remote(state.token))
        except ray.exceptions.RayError:  # its node died: retries unknown, the next study starts another
            ACTORS.clear()
            counts = {}
        outcome.retried = [u.key for u in todo if counts.get(u.key, 0) > 1 or u.key in state.tries]
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


def submit(state: Submission, todo: list[Unit], plan: WorkerPlan, executor: ExecutorConfig, shared_ref, attempts) -> None:
    """A task per unit, all at once: Ray queues what the cluster cannot run yet."""
    task = state.ray.remote(execute).options(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus,
                                             max_retries=executor.max_retries, retry_exceptions=False)
    state.refs.update({task.remote(u.fn, u.payload, shared_ref, u.key, attempts, plan.threads): u.key for u in todo})


def start_actors(state: Submission, plan: WorkerPlan, executor: ExecutorConfig, shared_ref, attempts) -> None:
    """plan.actors Resident actors; a unit goes to an actor as soon as it has finished its previous one.
    An actor lost with its worker or node is replaced by a new one (placed wherever there is room) and
    its unit handed out again, up to max_retries times: the driver does this, not Ray's actor restarts,
    since a restarting actor that waits for room while the others hold theirs would wait for ever."""
    cls = state.ray.remote(Resident).options(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, max_restarts=0)
    state.new_actor = lambda: cls.remote(plan.threads)
    state.max_retries = executor.max_retries
    state.actors = [state.new_actor() for _ in range(plan.actors)]
    state.give = lambda actor, unit: actor.run.remote(unit.fn, unit.payload, [shared_ref], unit.key, attempts)


def hand_out(state: Submission, actor) -> Any | None:
    """The next queued unit to `actor`; its ref (None when the queue is empty)."""
    if not state.queue:
        return None
    unit = state.queue.pop(0)
    ref = state.give(actor, unit)
    state.refs[ref] = unit.key
    state.busy[ref] = actor
    state.running[ref] = unit
    return ref


def collect(state: Submission, stop: Callable[[], bool] | None) -> None:
    """Take each run's value as it finishes (an actor that finished gets the next unit) until none is
    left or a stop request (Ctrl-C included)."""
    ray, pending = state.ray, list(state.refs)
    try:
        while pending:
            if stop is not None and stop():
                break
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)
            for ref in ready:
                pending.extend(next_for_actor(state, ref, take(state, ref)))
    except KeyboardInterrupt:
        sys.stderr.write(f"\nstopping: cancelling {len(pending) + len(state.queue)} unfinished run(s), keeping the "
                         "finished ones\n")
    if pending or state.queue:
        cancel(state, pending)


def next_for_actor(state: Submission, ref, lost: str | None) -> list:
    """After an actor's run: its next unit. When the actor was lost (`lost`: why), the unit goes back
    to the head of the queue (or fails, past max_retries) and a new actor takes the lost one's place.
    An actor with nothing left to do is ended at once (its CPUs and GPUs freed for the others)."""
    actor, unit = state.busy.pop(ref, None), state.running.pop(ref, None)
    if actor is None:
        return []
    if lost is not None:
        state.ray.kill(actor, no_restart=True)
        state.actors = [a for a in state.actors if a is not actor]
        key = unit.key[len(state.token):]
        if state.tries.get(key, 0) < state.max_retries:
            state.tries[key] = state.tries.get(key, 0) + 1
            state.queue.insert(0, unit)
        else:
            state.outcome.failed[key] = lost
        if not state.queue:
            return []
        actor = state.new_actor()
        state.actors.append(actor)
    following = hand_out(state, actor)
    if following is None:
        state.ray.kill(actor, no_restart=True)
        state.actors = [a for a in state.actors if a is not actor]
        return []
    return [following]


def take(state: Submission, ref) -> str | None:
    """Keep one finished run's value (journal, on_value), or its failure; when an actor running it was
    lost, why (nothing is kept: next_for_actor hands the unit out again)."""
    ray, outcome, key = state.ray, state.outcome, state.key(ref)
    try:
        got = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        outcome.cancelled.append(key)
        return None
    except ray.exceptions.RayError as err:  # a worker or node lost past its retries, an error in the run
        why = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}"
        if ref in state.busy and isinstance(err, (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError)):
            return why
        outcome.failed[key] = why
        return None
    outcome.values[key], outcome.nodes[key] = got["value"], got["node"]
    if state.journal is not None:
        state.journal.append(key, got["value"])
    if state.on_value is not None:
        state.on_value(key, got["value"], len(outcome.values), state.total)
    return None


def cancel(state: Submission, pending: list) -> None:
    """Stop every unfinished run and keep those that finished meanwhile: tasks are ray.cancel-ed;
    actors (whose running call Ray cannot interrupt) are killed; queued units are never started."""
    ray, outcome = state.ray, state.outcome
    if state.actors:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
        for ref in ready:
            if take(state, ref) is not None:  # its actor was lost: the run did not finish
                outcome.cancelled.append(state.key(ref))
        for actor in state.actors:
            ray.kill(actor, no_restart=True)
        state.actors = []
        outcome.cancelled.extend(state.key(ref) for ref in pending)
    else:
        for ref in pending:
            ray.cancel(ref, force=False)
        ready, rest = ray.wait(pending, num_returns=len(pending), timeout=5.0)
        for ref in ready:
            take(state, ref)
        outcome.cancelled.extend(state.key(ref) for ref in rest if state.key(ref) not in outcome.cancelled)
    outcome.cancelled.extend(unit.key[len(state.token):] for unit in state.queue)
    state.queue = []
