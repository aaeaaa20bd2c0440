"""Samplers side by side at the deepest point of deep linear networks (issue #17, accuracy).

Every candidate runs the same seeded cases, one after another in one process (torch on one thread):

- deepest: the first 8 cases of the `dln-deepest` suite (every factor of one rank r, λ(w*) = Aoyagi's λ)
  plus 8-6-4-6-8 with r = 2 (λ = 17.5), the case where chains started at w* are known to lag;
- dln-1k: the first 4 cases of the `dln-1k` suite (the paper's generator);
- regular: a 6×4 linear model (one full-rank matrix, λ = d/2 = 12);
- app: the app's DLN example, widths 5-3-5 with r = 1 (λ = 8).

A candidate is a sampler override on top of the dln kind's defaults (`{}` = the defaults as they
are). `step_size` may be "sqrt_rule": √ε of the kind's plain-SGLD rule (curvature.spread_aware_step_size),
fixed. Results are cached per (candidate, case) in a JSON file, so candidates can be added run by run;
the table printed covers every candidate in the file: per group the median and 90th percentile of
|λ̂ − λ|/λ, the mean signed error, the mean acceptance and the wall time.

    .venv/bin/python benchmarks/bench_deepest.py                       # every candidate not yet run
    .venv/bin/python benchmarks/bench_deepest.py --candidates plain local-auto
    .venv/bin/python benchmarks/bench_deepest.py --table               # print the table only
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from llc_core import RunConfig, run  # noqa: E402
from llc_core.studies.validate import suite_cases  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "bench_deepest.json"

# name -> sampler override (on top of the dln kind's defaults)
CANDIDATES: dict[str, dict] = {
    "plain": {"preconditioner": None},
    "plain-spread": {"preconditioner": None, "start_spread": 0.1},
    "plain-24k": {"preconditioner": None, "steps": 24000},
    "psgld": {"preconditioner": "rmsprop"},
    "psgld-24k": {"preconditioner": "rmsprop", "steps": 24000},
    "local-auto": {"preconditioner": "rmsprop-local"},
    "local-auto-24k": {"preconditioner": "rmsprop-local", "steps": 24000},
    "local-auto-24k-t80": {"preconditioner": "rmsprop-local", "steps": 24000, "target_acceptance": 0.80},
    "local-auto-12k": {"preconditioner": "rmsprop-local", "steps": 12000},
    "local-auto-12k-t85": {"preconditioner": "rmsprop-local", "steps": 12000, "target_acceptance": 0.85},
    "scaled-auto-6k": {"preconditioner": "rmsprop-local-scaled"},
    "scaled-auto-12k": {"preconditioner": "rmsprop-local-scaled", "steps": 12000},
    "local-sqrt-6k": {"preconditioner": "rmsprop-local", "step_size": "sqrt_rule"},
    "local-sqrt-12k": {"preconditioner": "rmsprop-local", "step_size": "sqrt_rule", "steps": 12000},
    "local-sqrt-24k": {"preconditioner": "rmsprop-local", "step_size": "sqrt_rule", "steps": 24000},
    "defaults": {},  # session 6, first run: the heat correction at the old 6,000 steps
    "defaults-sized": {},  # the same engine once the dln kind's steps followed its size (zoo.SINGULAR_STEPS)
}


def cases() -> list[tuple[str, str, dict]]:
    """(group, name, RunConfig dict) of every case, in a fixed order."""
    out = []
    for case in suite_cases("dln-deepest", count=8):
        out.append(("deepest", case.name, case.config))
    out.append(("deepest", "8-6-4-6-8 r=2", {"model": {"kind": "dln", "widths": [8, 6, 4, 6, 8], "rank": 2, "seed": 0},
                                            "data": {"n": 10_000}}))
    for case in suite_cases("dln-1k", count=4):
        out.append(("dln-1k", case.name, case.config))
    out.append(("regular", "6x4 linear", {"model": {"kind": "dln", "widths": [6, 4], "seed": 0}, "data": {"n": 10_000}}))
    out.append(("app", "5-3-5 r=1", {"model": {"kind": "dln", "widths": [5, 3, 5], "rank": 1, "seed": 0},
                                     "data": {"n": 10_000}}))
    return out


def sqrt_rule_step_size(config: dict) -> float:
    from llc_core.runner import build_problem

    built = RunConfig.from_dict(json.loads(json.dumps(config)))
    problem = build_problem(built.model, built.data)
    nbeta = built.data.n / math.log(built.data.n)
    return math.sqrt(problem.step_size_rule(nbeta, problem.sampler_defaults.get("localization", 1.0)))


def run_one(config: dict, override: dict) -> dict:
    config = json.loads(json.dumps(config))
    sampler = dict(override)
    if sampler.get("step_size") == "sqrt_rule":
        sampler["step_size"] = sqrt_rule_step_size(config)
    config["sampler"] = {**config.get("sampler", {}), **sampler}
    started = time.perf_counter()
    result = run(RunConfig.from_dict(config))
    wall = time.perf_counter() - started
    truth = result.theoretical_llc
    # every chain diverged: no estimate, scored as an infinite error
    rel_error = (result.llc_mean - truth) / truth if result.llc_mean is not None else math.inf
    return {"llc_hat": result.llc_mean if result.llc_mean is not None else math.nan, "llc_se": result.llc_se,
            "truth": truth, "rel_error": rel_error, "diverged": len(result.diverged_chains or []), "acceptance": result.mala_acceptance_mean,
            "step_size": float(result.config["sampler"]["step_size"]) if result.config["sampler"]["step_size"] != "auto"
            else (result.calibration or {}).get("step_size"),
            "wall_s": wall, "num_params": result.num_params}


def table(results: dict, names: list[str]) -> str:
    groups = ["deepest", "dln-1k", "regular", "app"]
    lines = ["candidate            | " + " | ".join(f"{g}: med / p90 / mean±" for g in groups)
             + " | acc | wall s (max case)",
             "-" * 150]
    for name in names:
        rows = results.get(name, {})
        if not rows:
            continue
        cells = []
        for group in groups:
            errs = np.array([r["rel_error"] for r in rows.values() if r["group"] == group])
            if len(errs) == 0:
                cells.append("-")
                continue
            cells.append(f"{100 * np.median(np.abs(errs)):5.1f}% / {100 * np.percentile(np.abs(errs), 90):5.1f}% / "
                         f"{100 * errs.mean():+5.1f}%")
        acc = np.mean([r["acceptance"] for r in rows.values() if r["acceptance"] is not None] or [math.nan])
        walls = [r["wall_s"] for r in rows.values()]
        lines.append(f"{name:20s} | " + " | ".join(cells) + f" | {acc:.2f} | {sum(walls):6.0f} ({max(walls):4.0f})"
                     + ("" if len(rows) == len(cases()) else f"  [{len(rows)} of {len(cases())} cases]"))
    lines.append("")
    lines.append("per case (λ̂ / λ, relative error):")
    case_names = [name for _, name, _ in cases()]
    for name in names:
        rows = results.get(name, {})
        if rows:
            lines.append(f"  {name}: " + ", ".join(
                f"{c} {rows[c]['llc_hat']:.1f}/{rows[c]['truth']:g} ({100 * rows[c]['rel_error']:+.0f}%)"
                for c in case_names if c in rows))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="*", default=None, help=f"of {', '.join(CANDIDATES)}")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--table", action="store_true", help="print the table of the cached results only")
    parser.add_argument("--rerun", action="store_true", help="run cases already cached again")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    names = args.candidates if args.candidates is not None else list(CANDIDATES)
    if not args.table:
        out.parent.mkdir(parents=True, exist_ok=True)
        for name in names:
            override = CANDIDATES[name]
            for group, case_name, config in cases():
                if case_name in results.get(name, {}) and not args.rerun:
                    continue
                row = run_one(config, override)
                row["group"] = group
                results.setdefault(name, {})[case_name] = row
                out.write_text(json.dumps(results, indent=1))
                print(f"{name:20s} {case_name:18s} d={row['num_params']:5d} λ̂ {row['llc_hat']:8.2f} ± {row['llc_se'] or 0:5.2f}"
                      f" λ {row['truth']:7.2f} ({100 * row['rel_error']:+5.1f}%) acc {row['acceptance'] or math.nan:.2f}"
                      f" ε {row['step_size'] or math.nan:.2e} {row['wall_s']:5.1f} s"
                      + (f" {row['diverged']} chains diverged" if row["diverged"] else ""), flush=True)
    print(table(results, [n for n in CANDIDATES if n in results] + [n for n in results if n not in CANDIDATES]))


if __name__ == "__main__":
    main()
