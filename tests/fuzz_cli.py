"""Fuzz driver for tests/test_hardening.py: `python tests/fuzz_cli.py SEED COUNT` feeds COUNT malformed
configs (generated from the hostile inputs of issue 16) to `python -m llc_core run`, in this one process
(torch is imported once), each under a time limit, and prints one JSON line per failure: a case whose
exit status is not 2, whose stderr is not one line `error: ...`, that raised, or that hung.
The test runs it under RLIMIT_AS with a small LLC_MAX_MEMORY_GB, so an allocation past the budget fails.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import signal
import sys
import tempfile
from pathlib import Path

BASES = [
    {"model": {"kind": "potential", "powers": [1, 2]}, "data": {"n": 200}, "sampler": {"steps": 40, "chains": 2}},
    {"model": {"kind": "dln", "widths": [3, 2, 3]}, "data": {"n": 100}, "sampler": {"steps": 40, "chains": 2}},
    {"model": {"kind": "mlp", "input_dim": 4, "hidden": [5]}, "data": {"n": 100}, "sampler": {"steps": 40, "chains": 2}},
    {"model": {"kind": "rrr", "input_dim": 3, "hidden": 2, "output_dim": 3}, "data": {"n": 100},
     "sampler": {"steps": 40, "chains": 2}},
]
# (where, key, hostile values): every value here is wrong for that key
HOSTILE = [
    ("data", "noise_scale", [0, -1, 1e300, "1", [], float("nan"), float("inf")]),
    ("data", "n", [1e10, 10_000_000_000, 0, 1, -5, "200", 10**30, [200], True]),
    ("data", "seed", [10**30, -1, 1.5, "0", []]),
    ("model", "kind", [[], {}, 5, "nope", None]),
    ("model", "seed", [10**30, -1, 1.5, []]),
    ("model", "hidden", [[10_000_000], 10_000_000, [0], [], "16", [1e5, 1e5], [2] * 1000]),
    ("model", "widths", [[100_000, 100_000], [1e5, 1e5], [3], [], "3,3", [3, -1], [2] * 1000]),
    ("model", "powers", [[1] * 100_000, [], [-1], "1,2", [1.5]]),
    ("model", "layers", [[1_000_000, 1_000_000], [1e6, 1e6], [5, 2]]),
    ("model", "train_steps", [10**12, 1e12, -1, "5"]),
    ("model", "path", [5, "/dev/zero", "/nonexistent/file.pt", []]),
    ("sampler", "chains", [1_000_000, 1e6, 0, -1, "8", True, 10**30]),
    ("sampler", "steps", [10**12, 1e12, 1e10, 0, "100", [], 10**30]),
    ("sampler", "seed", [10**30, -1, 1.5, "0"]),
    ("sampler", "nbeta", [1e-300, -1, 0, 1e300, "x", float("nan")]),
    ("sampler", "start_spread", [1e300, -1, 0, "x"]),
    ("sampler", "step_size", [1e300, -1, 0, "fast", float("inf"), []]),
    ("sampler", "localization", [1e300, -1, "x"]),
    ("sampler", "snapshot_every", [10**12, 0, 1.5]),
    ("sampler", "batch_size", [0, 10**12, 1.5, "all"]),
    ("sampler", "burnin", [-1, 1e300, 10**12, "half"]),
    ("sampler", "algorithm", [[], "hmc", 5]),
    ("sampler", "preconditioner", [5, "adam", [1e400], {}]),
    ("sampler", "unknown_key", [1]),
    (None, "device", [["cpu"], 5, "tpu", {}]),
    (None, "dtype", [["float32"], "float8", 5]),
]
RAW = ["[" * 5000 + "]" * 5000, '{"model": ' * 3000 + "{}" + "}" * 3000, "not json", "[]", "5", '"x"', "", "{",
       '{"model": []}', '{"sampler": 5}', '{"data": null}']


def cases(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    out = list(RAW)
    while len(out) < count:
        config = copy.deepcopy(rng.choice(BASES))
        for _ in range(rng.choice([1, 1, 1, 2])):
            where, key, values = rng.choice(HOSTILE)
            value = rng.choice(values)
            if where is None:
                config[key] = value
            else:
                if where == "model" and key in ("layers",):
                    config["model"] = {"kind": "dln", "width_range": [2, 3]}
                if where == "model" and key == "path":
                    config["model"] = {"kind": "checkpoint"}
                config[where][key] = value
        out.append(json.dumps(config))
    return out


class Hang(Exception):
    pass


def on_alarm(signum, frame):
    raise Hang()


def main() -> int:
    seed, count, limit = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 20
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from llc_core.cli import main as cli_main

    signal.signal(signal.SIGALRM, on_alarm)
    folder = Path(tempfile.mkdtemp(prefix="llc-fuzz-"))
    for index, text in enumerate(cases(seed, count)):
        path = folder / f"{index}.json"
        path.write_text(text)
        err, out = io.StringIO(), io.StringIO()
        signal.alarm(limit)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                rc = cli_main(["run", "--quiet", str(path)])
            problem = None
        except Hang:
            rc, problem = None, "hung"
        except BaseException as exc:  # noqa: BLE001 - every escape is a finding
            rc, problem = None, f"raised {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            signal.alarm(0)
        lines = err.getvalue().splitlines()
        if problem is None and (rc != 2 or len(lines) != 1 or not lines[0].startswith("error: ")
                                or "Traceback" in err.getvalue()):
            problem = f"rc {rc}, stderr {err.getvalue()[-300:]!r}"
        if problem:
            print(json.dumps({"config": text[:300], "problem": problem}), flush=True)
        path.unlink()
    print(json.dumps({"done": count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
