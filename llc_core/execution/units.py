"""A study's independent runs, wherever they go: Units, their keys, what came back, the results directory.

A study (a validation suite's cases, a sweep's cells, a trajectory's checkpoints, an estimate's chain
groups) hands its runs over as Units: a stable key made from the study and the run (never from the
worker that runs it), a module-level function and its payload. `ray_backend.run_units` runs them as
Ray tasks or actors; `run_here` runs them one after another in this process. Both skip the runs a
Journal (one JSON line per finished run, in a results directory) already holds, and append each run
as it finishes, so a study stopped or crashed resumes without computing them again. Nothing here
imports Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from llc_core.errors import LLCInputError


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
    executor: str = "ray"  # "ray", or "local" for runs made here
    workers: str = "tasks"  # on Ray: "tasks", or "N actors" (long-lived, the shared data resident)

    def summary(self) -> dict[str, Any]:
        """The part a study's report keeps: where it ran and what was retried, resumed, lost."""
        out = {"executor": self.executor, "address": self.address, "runs": len(self.values) + len(self.failed),
               "nodes_used": len(set(self.nodes.values())), "retried": list(self.retried),
               "resumed": list(self.resumed), "failed": dict(self.failed), "cancelled": list(self.cancelled)}
        if self.executor == "ray":
            out["workers"] = self.workers
        return out


def unit_key(label: str, spec: Any) -> str:
    """"label#digest": the digest of the run's full description, so that a results directory written
    by a different study (another seed, another sampler) is never taken for this one."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return f"{label}#{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def tensor_digest(tensors: dict[str, Any]) -> str:
    """A digest of named tensors' names, shapes, dtypes and bytes (a checkpoint's weights, a dataset):
    what a run key holds for data too big to spell out."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}|".encode())
        if value.numel():
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


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
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            raise LLCInputError(f"cannot read the results directory {str(self.path.parent)!r}: {err.strerror}") from None
        for line in text.splitlines():
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
        try:
            if self.path.is_file():
                self.path.unlink()
        except OSError as err:
            raise LLCInputError(f"cannot write the results directory {str(self.path.parent)!r}: {err.strerror}") from None


def json_ready(value: Any) -> Any:
    """NaN and ±inf as null, tuples as lists: what JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def combine(outcomes: list[Outcome]) -> Outcome:
    """Several outcomes of one study (its calibration run, then the rest) as one."""
    whole = Outcome()
    for part in outcomes:
        whole.values.update(part.values)
        whole.failed.update(part.failed)
        whole.nodes.update(part.nodes)
        for name in ("retried", "resumed", "cancelled"):
            getattr(whole, name).extend(getattr(part, name))
        whole.address, whole.executor, whole.workers = part.address, part.executor, part.workers
        whole.wall_s += part.wall_s
    return whole


def take_resumed(units: list[Unit], journal: Journal | None, outcome: Outcome,
                 on_value: Callable[[str, dict, int, int], None] | None) -> list[Unit]:
    """Fill `outcome` with the runs the journal already holds (each handed to on_value); the rest."""
    if len({u.key for u in units}) != len(units):
        raise LLCInputError("two runs of this study have the same key: it cannot be split into runs")
    found = journal.load() if journal is not None else {}
    for unit in units:
        if unit.key in found:
            outcome.values[unit.key] = found[unit.key]
            outcome.resumed.append(unit.key)
            if on_value is not None:
                on_value(unit.key, found[unit.key], len(outcome.values), len(units))
    return [u for u in units if u.key not in found]


def run_here(units: list[Unit], *, shared: Any = None, journal: Journal | None = None,
             on_value: Callable[[str, dict, int, int], None] | None = None,
             stop: Callable[[], bool] | None = None) -> Outcome:
    """The units one after another in this process (no Ray): those in the journal are taken from it,
    each other one is run, written to the journal and handed to on_value; a stop request ends it
    between runs (the rest are `cancelled`)."""
    started = time.perf_counter()
    outcome = Outcome(address="this machine", executor="local")
    todo = take_resumed(units, journal, outcome, on_value)
    for index, unit in enumerate(todo):
        if stop is not None and stop():
            outcome.cancelled.extend(u.key for u in todo[index:])
            break
        value = unit.fn(unit.payload, shared)
        outcome.values[unit.key] = value
        if journal is not None:
            journal.append(unit.key, value)
        if on_value is not None:
            on_value(unit.key, value, len(outcome.values), len(units))
    outcome.wall_s = time.perf_counter() - started
    return outcome


def where_ran(info: dict[str, Any]) -> str:
    """One line on where a study's runs went (an Outcome's summary): here or the cluster and its nodes,
    and what was retried, resumed, cancelled or lost."""
    if info.get("executor") == "local":
        parts = [f"ran here: {info['runs']} run(s)"]
    else:
        parts = [f"ran on Ray at {info['address']}: {info['runs']} run(s) on {info['nodes_used']} node(s)"
                 + (f", {info['workers']}" if info.get("workers", "tasks") != "tasks" else "")]
    for name in ("retried", "resumed", "cancelled"):
        if info.get(name):
            parts.append(f"{name} {len(info[name])}: {', '.join(k.split('#')[0] for k in info[name])}")
    if info.get("failed"):
        parts.append(f"lost {len(info['failed'])}: {', '.join(k.split('#')[0] for k in info['failed'])}")
    return "; ".join(parts)
