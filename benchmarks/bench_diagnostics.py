"""Are the verdicts right when they speak, and do they speak when λ̂ is wrong? A labelled corpus.

Models whose λ is known (toy potentials, judged against their exact finite-n target as in the
`toy` suite; deep linear networks, regular and singular, judged against λ(w*)) are run at their
defaults and deliberately mis-set: ε far too small (÷1000 of the default run's ε) or too large
(×30), far too few steps (1/30), γ far too large (3000), a minibatch far too small (4), and, for the
DLNs, a w* that is not a minimum (a student after 20 SGD steps). A run is *wrong* when
|λ̂ − target|/target > 15% (or it has no estimate) and *right* when ≤ 5%; in between it is neither.

Printed from one run: the confusion table per verdict code (how often it fired on right, between
and wrong runs), silent failures (wrong runs without a warning or error; target 0), right runs that
carry a warning (target ≤ 10%), runs with verdicts advising opposite moves (target 0), and whether
the advice works: for each mis-set run that is not right, the first suggestion is applied (what the
app's first button does), and again on the run that follows: right within ≤ 2 clicks (target ≥ 90%).

    .venv/bin/python benchmarks/bench_diagnostics.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from llc_core.diagnostics import apply_suggestion, judge, opposite_advice  # noqa: E402
from llc_core.config import RunConfig  # noqa: E402
from llc_core.result import RunResult  # noqa: E402
from llc_core.runner import build_problem, kind_reference  # noqa: E402
from llc_core.studies.validate import Case, run_and_score  # noqa: E402

RIGHT, WRONG = 0.05, 0.15
N = 10_000
MODELS = {
    "w^2": {"model": {"kind": "potential", "powers": [1]}},
    "w^4": {"model": {"kind": "potential", "powers": [2]}},
    "(w1 w2^2)^2": {"model": {"kind": "potential", "powers": [1, 2]}},
    "linear 6x4": {"model": {"kind": "dln", "widths": [6, 4]}},
    "dln 5-3-5 r1": {"model": {"kind": "dln", "widths": [5, 3, 5], "rank": 1}},
    "dln 4-6-3 full": {"model": {"kind": "dln", "widths": [4, 6, 3]}},
    "dln-1k seed 0": {"model": {"kind": "dln", "layers": [2, 5], "width_range": [5, 50], "seed": 0}},
    "dln-1k seed 3": {"model": {"kind": "dln", "layers": [2, 5], "width_range": [5, 50], "seed": 3}},
    "dln 8-6-4-6-8 r2": {"model": {"kind": "dln", "widths": [8, 6, 4, 6, 8], "rank": 2}},
}
QUICK = ("w^2", "linear 6x4", "dln 5-3-5 r1")


def mis_settings(model: dict, default_row) -> dict[str, dict | None]:
    """Sampler overrides of each mis-set variant (None: not applicable to this model)."""
    eps, steps = default_row.step_size, default_row.steps
    dln = model["model"]["kind"] == "dln"
    return {
        "ε ÷ 1000": {"step_size": eps / 1000} if eps else None,
        "ε × 30": {"step_size": eps * 30} if eps else None,
        "steps ÷ 30": {"steps": max(60, steps // 30)} if steps else None,
        "γ = 3000": {"localization": 3000.0},
        "batch 4": {"batch_size": 4},
        "w* not a minimum": "train" if dln else None,
    }


def label(row) -> str:
    if row.rel_error is None:
        return "wrong"
    error = abs(row.rel_error)
    return "right" if error <= RIGHT else "wrong" if error > WRONG else "between"


def warned(row) -> bool:
    return any(v["severity"] in ("warning", "error") for v in row.verdicts) or row.error is not None


def first_suggestion(row) -> dict | None:
    return next((v["suggestion"] for v in row.verdicts if v["suggestion"]), None)


def run(name: str, config: dict):
    """The scored row of one run; the row keeps the run's result (without its trace) for --rejudge."""
    config = {**copy.deepcopy(config), "data": {"n": N}}
    row, result = run_and_score(Case(name, config))
    row.result = result.to_dict() if result is not None else None
    return row


def follow_advice(name: str, config: dict, row, clicks: int = 2) -> tuple[int | None, list[str], float | None]:
    """Apply the first suggestion up to `clicks` times: (clicks to a right run or None, the labels,
    the best |relative error| reached)."""
    labels, best = [], None
    for click in range(1, clicks + 1):
        suggestion = first_suggestion(row)
        if suggestion is None:
            return None, labels + ["no advice"], best
        config = apply_suggestion(config, suggestion)
        row = run(f"{name} +{click}", config)
        labels.append(f"{label(row)} ({_err(row)})")
        if row.rel_error is not None:
            best = min(abs(row.rel_error), best if best is not None else math.inf)
        if label(row) == "right":
            return click, labels, best
    return None, labels, best


def _err(row) -> str:
    return "no λ̂" if row.rel_error is None else f"{row.rel_error:+.0%}"


def corpus(models: dict[str, dict], advice: bool) -> list[dict]:
    records = []
    for name, model in models.items():
        default = run(name, model)
        records.append(record(name, "default", model, default, advice=False))
        for variant, override in mis_settings(model, default).items():
            if override is None:
                continue
            config = copy.deepcopy(model)
            if override == "train":
                config["model"]["train_steps"] = 20
            else:
                config["sampler"] = {**config.get("sampler", {}), **override}
            row = run(f"{name} {variant}", config)
            records.append(record(name, variant, config, row, advice=advice))
    return records


def record(model: str, variant: str, config: dict, row, advice: bool) -> dict:
    out = {"model": model, "variant": variant, "label": label(row), "rel_error": row.rel_error,
           "error": row.error, "warned": warned(row), "codes": [v["code"] for v in row.verdicts],
           "opposite": opposite_advice([v["suggestion"] for v in row.verdicts], row.step_size),
           "first_suggestion": first_suggestion(row), "wall_s": row.wall_s,
           "result": getattr(row, "result", None)}
    if advice and out["label"] != "right":
        out["clicks"], out["after"], out["best_after"] = follow_advice(f"{model} {variant}", config, row)
    print(f"  {model:18s} {variant:17s} {out['label']:8s} {_err(row):>7s}  {', '.join(out['codes'])}"
          + (f"  → {' → '.join(out.get('after', []))}" if "after" in out else ""), flush=True)
    return out


def report(records: list[dict]) -> None:
    by_label = Counter(r["label"] for r in records)
    print(f"\n{len(records)} runs: {by_label['right']} right (≤ 5%), {by_label['between']} between, "
          f"{by_label['wrong']} wrong (> 15% or no λ̂)")
    codes = sorted({c for r in records for c in r["codes"]})
    print(f"\n{'verdict':20s} {'right':>6s} {'between':>8s} {'wrong':>6s}")
    for code in codes:
        counts = Counter(r["label"] for r in records if code in r["codes"])
        print(f"{code:20s} {counts['right']:6d} {counts['between']:8d} {counts['wrong']:6d}")
    wrong = [r for r in records if r["label"] == "wrong"]
    right = [r for r in records if r["label"] == "right"]
    silent = [r for r in wrong if not r["warned"]]
    cry_wolf = [r for r in right if r["warned"]]
    opposite = [r for r in records if r["opposite"]]
    print(f"\nsilent failures (wrong, no warning): {len(silent)} of {len(wrong)} (target 0)"
          + "".join(f"\n    {r['model']} {r['variant']} {r['rel_error']}" for r in silent))
    print(f"right runs with a warning: {len(cry_wolf)} of {len(right)} = {len(cry_wolf) / max(len(right), 1):.0%} "
          "(target ≤ 10%)" + "".join(f"\n    {r['model']} {r['variant']} {r['codes']}" for r in cry_wolf))
    print(f"runs advising opposite moves: {len(opposite)} (target 0)"
          + "".join(f"\n    {r['model']} {r['variant']} {r['codes']}" for r in opposite))
    advised = [r for r in records if "clicks" in r and r["variant"] != "default"]
    fixed = [r for r in advised if r["clicks"] is not None]
    print(f"mis-set runs not right: {len(advised)}; right after ≤ 2 clicks of the first suggestion: "
          f"{len(fixed)} = {len(fixed) / max(len(advised), 1):.0%} (target ≥ 90%)")
    # the advice cannot beat the model's own defaults: how many reach the default run's accuracy
    default_error = {r["model"]: abs(r["rel_error"]) for r in records
                     if r["variant"] == "default" and r["rel_error"] is not None}
    as_good = [r for r in advised if r.get("best_after") is not None and r["model"] in default_error
               and r["best_after"] <= max(RIGHT, default_error[r["model"]] + 0.02)]
    fixable = [r for r in advised if r["variant"] != "w* not a minimum"]
    print(f"  … as accurate as the model's default run (within 2 points) after ≤ 2 clicks: {len(as_good)} of "
          f"{len(fixable)} that a sampler setting can fix = {len(as_good) / max(len(fixable), 1):.0%} "
          "(a w* that is not a minimum needs training, which the verdict says)")
    print(f"wall time per run: median {statistics.median(r['wall_s'] for r in records):.1f} s")


def reference_of(result: dict):
    """What runner.run knew when it judged this run: the kind's recommendations (rebuilt)."""
    config = RunConfig.from_dict({k: v for k, v in result["config"].items() if k in ("model", "data")})
    problem = build_problem(config.model, config.data)
    sampler = result["config"]["sampler"]
    rule = problem.step_size_rule(sampler["nbeta"], sampler["localization"]) if problem.step_size_rule else None
    return kind_reference(problem, rule)


def rejudge(records: list[dict]) -> list[dict]:
    """The saved runs judged again by today's verdicts (to tune them without re-running)."""
    for r in records:
        if r.get("result"):
            found = judge(RunResult.from_dict(r["result"]), reference_of(r["result"]))
            r["codes"] = [v.code for v in found]
            r["warned"] = any(v.severity in ("warning", "error") for v in found)
            r["opposite"] = opposite_advice([v.suggestion for v in found], r["result"].get("step_size"))
            r["first_suggestion"] = next((v.suggestion for v in found if v.suggestion), None)
        print(f"  {r['model']:18s} {r['variant']:17s} {r['label']:8s} "
              f"{'no λ̂' if r['rel_error'] is None else format(r['rel_error'], '+.0%'):>7s}  {', '.join(r['codes'])}"
              f"  first: {r['first_suggestion']}")
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--no-advice", action="store_true", help="skip the runs that follow the advice")
    parser.add_argument("--models", help="comma-separated model names (default: all)")
    parser.add_argument("--json", help="write the records to this file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rejudge", help="judge the runs saved by --json again, without running anything")
    args = parser.parse_args()
    if args.rejudge:
        with open(args.rejudge) as f:
            report(rejudge(json.load(f)))
        return
    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else QUICK if args.quick else list(MODELS)
    started = time.perf_counter()
    records = corpus({k: MODELS[k] for k in names}, advice=not args.no_advice)
    report(records)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1, default=str)


if __name__ == "__main__":
    main()
