"""Held-out diagnosis evaluation: third-party training code the rules were not written against,
scored strictly against a truth that no gradwatch rule computes.

The development set (bench/diagnosis_eval.py, plus the word_language_model / GPT-2-under-HF /
Lightning-MLP runs of issue 18) is what rules are tuned on. This set is not: nanoGPT, pytorch/examples
mnist and time_sequence_prediction, a transformers BERT under the HF Trainer, Lightning's own
examples and a timm-style ResNet (bench/thirdparty_heldout/), each healthy and with faults injected
the way users meet them. Each case trains once with gradwatch watching (its ~10 lines of glue) and,
in the same process, bench/thirdparty_heldout/truth_probe.py measures the run with plain torch; the
oracle (bench/thirdparty_heldout/oracle.py) turns those measurements into the truth: the kind of
problem, its onset step and the layers affected. The diagnosis a user sees (`diagnose_run` on the
run folder: post-hoc flags merged with those raised live) is then scored:

- a pathological case (truth kind not healthy) is **strictly right** when an active (warning or
  critical) flag is of the truth's kind and the earliest such flag (the diagnosis's claim of when
  it began) has its first step within the tolerance of the truth's onset (TOLERANCE_STEPS optimizer
  steps; for overfitting one evaluation interval when longer), names none but affected layers where
  both name layers, and offers a remedy that fits the kind, while no active flag of the run offers a
  harmful remedy;
- **kind right** needs only the active flag of the truth's kind;
- a healthy case counts its active flags as false flags;
- harmful remedies: suggesting what the run already applies, what does not fit its architecture, or
  what works against the truth's kind (a higher lr to a diverging run, regularisation to an
  underfitting one), on any active flag of any case.

    python bench/diagnosis_heldout.py [--quick] [--only CASE[,CASE]] [--seeds N] [--jobs N] [--logdir DIR]
                                      [--json-out F] [--list]

The last line printed is one JSON object: {"set": "heldout", "cases", "strict_score", "kind_score",
"false_flags_healthy", "harmful_remedies", "onset_error_steps", ...}. Never change a rule while
looking at this set's results.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.thirdparty_heldout.cases import CASES, HeldoutCase, get_case, with_seed  # noqa: E402

ACTIVE = ("warning", "critical")
TOLERANCE_STEPS = 5
# The rules that report each kind of problem (a diverging run may be told as exploding gradients,
# a diverging loss or NaN: one story, any of its chapters).
KIND_RULES = {
    "divergence": ("loss_divergence", "exploding_gradient", "nonfinite"),
    "vanishing": ("vanishing_gradient",),
    "dead_units": ("dead_units",),
    "overfitting": ("overfitting",),
    "underfitting": ("underfitting",),
}
# Rules that may also fire on a run of that kind without being wrong (consequences of the problem).
ALSO_FITS = {
    "divergence": ("learning_rate", "underfitting", "dead_units"),
    "vanishing": ("underfitting", "learning_rate", "saturated_units"),
    "dead_units": ("underfitting", "vanishing_gradient"),
    "overfitting": (),
    "underfitting": ("learning_rate",),
}
FITTING = {
    "divergence": ("lower-lr", "clipping"),
    "vanishing": ("relu", "leaky-relu", "batchnorm", "init"),
    "dead_units": ("init", "leaky-relu"),
    "overfitting": ("early-stopping", "dropout", "l2", "augment", "smaller", "l1"),
    "underfitting": ("higher-lr",),
}
AGAINST_KIND = {
    "divergence": ("higher-lr",),
    "dead_units": ("higher-lr",),
    "overfitting": ("bigger", "less-regularisation"),
    "underfitting": ("lower-lr", "smaller", "dropout", "l1", "l2", "early-stopping"),
}
NOT_FOR_SEQUENCE_MODELS = ("relu", "batchnorm", "lstm")


# ---- one case -------------------------------------------------------------------------------------
def train_case(case: HeldoutCase, logdir: Path) -> tuple[str, dict]:
    """Train `case` watched by gradwatch and measured by the truth probe."""
    module = importlib.import_module(f"bench.thirdparty_heldout.{case.codebase}")
    options = dict(case.options)
    if case.seed_offset:
        options["seed"] = module.DEFAULTS["seed"] + case.seed_offset
    return module.train(options, logdir, case.id)


def harmful_for(case: HeldoutCase, kind: str) -> set[str]:
    harmful = set(case.applies) | set(AGAINST_KIND.get(kind, ()))
    if case.sequence_model:
        harmful |= set(NOT_FOR_SEQUENCE_MODELS)
    return harmful


def fitting_for(case: HeldoutCase, kind: str) -> set[str]:
    return set(FITTING.get(kind, ())) - harmful_for(case, kind)


def score_case(case: HeldoutCase, truth: dict, flags: list[dict], step_offset: int = 0) -> dict:
    """Score one run's diagnosis (flag dicts as diagnose_run gives them) against its truth."""
    kind = truth["kind"]
    onset = None if truth["onset"] is None else int(truth["onset"]) + step_offset
    active = [f for f in flags if f.get("severity") in ACTIVE]
    harmful_set = harmful_for(case, kind)
    harmful = sorted({f"{f['rule']}:{r}" for f in active for r in f.get("remedy_ids", []) if r in harmful_set})
    result = {"case": case.id, "codebase": case.codebase, "intent": case.intent, "truth": kind,
              "truth_onset": onset, "truth_layers": truth["layers"],
              "fired": sorted({f"{f['rule']}{'!' if f['severity'] == 'critical' else ''}" for f in active}),
              "harmful_remedies": harmful, "kind_right": False, "onset_error": None, "onset_right": False,
              "layers_right": None, "remedy_right": False, "strict_right": False, "unexpected": []}
    if kind == "healthy":
        result["false_flags"] = len(active)
        result["strict_right"] = result["kind_right"] = not active and not harmful
        result["unexpected"] = sorted({f["rule"] for f in active})
        return result
    matching = [f for f in active if f["rule"] in KIND_RULES[kind]]
    fits = set(KIND_RULES[kind]) | set(ALSO_FITS[kind])
    for other in truth["findings"]:
        fits |= set(KIND_RULES.get(other, ()))
    result["unexpected"] = sorted({f["rule"] for f in active if f["rule"] not in fits})
    if not matching:
        return result
    result["kind_right"] = True
    flag = min(matching, key=lambda f: (f.get("first_step") is None, f.get("first_step") or 0))
    tolerance = TOLERANCE_STEPS
    if kind == "overfitting":
        tolerance = max(tolerance, truth["findings"]["overfitting"].get("evaluation_interval", 0))
    if flag.get("first_step") is not None and onset is not None:
        result["onset_error"] = int(flag["first_step"]) - onset
        result["onset_right"] = abs(result["onset_error"]) <= tolerance
    named, affected = set(flag.get("layers") or []), set(truth["layers"])
    result["layers_right"] = not named or not affected or bool(named & affected)
    result["flag_layers"] = sorted(named)
    result["remedy_right"] = bool(set(flag.get("remedy_ids", [])) & fitting_for(case, kind))
    result["strict_right"] = (result["onset_right"] and result["layers_right"] and result["remedy_right"]
                              and not harmful)
    return result


def evaluate_case(case_id: str, logdir: str) -> dict:
    """Train, measure and score one case (the unit of work of a --jobs worker)."""
    import torch

    from bench.thirdparty_heldout import oracle
    from gradwatch import diagnose_run

    torch.set_num_threads(1)
    case = get_case(case_id)
    wall = time.perf_counter()
    try:
        run_path, record = train_case(case, Path(logdir))
    except Exception as exc:  # gradwatch (or the case) broke the user's training: nothing to diagnose
        return {"case": case.id, "codebase": case.codebase, "intent": case.intent, "truth": None,
                "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                "traceback": traceback.format_exc(limit=6), "seconds": round(time.perf_counter() - wall, 1)}
    truth = oracle.truth(record)
    diagnosis = diagnose_run(run_path)
    result = score_case(case, truth, diagnosis["flags"], record.get("step_offset", 0))
    result.update(seconds=round(time.perf_counter() - wall, 1), run=run_path,
                  truth_findings={k: {kk: vv for kk, vv in v.items() if kk != "layers"}
                                  for k, v in truth["findings"].items()},
                  truth_evidence=truth["evidence"],
                  flags=[{k: f.get(k) for k in ("rule", "severity", "layers", "first_step", "remedy_ids")}
                         for f in diagnosis["flags"]])
    return result


# ---- the set --------------------------------------------------------------------------------------
def summarise(results: list[dict], wall: float) -> dict:
    # A case whose training gradwatch broke has no truth: it counts by its intent, as not right.
    errors = [r for r in results if r.get("error")]
    scored = [r for r in results if not r.get("error")]
    pathology = [r for r in scored if r["truth"] != "healthy"] + [r for r in errors if r["intent"] != "healthy"]
    healthy = [r for r in scored if r["truth"] == "healthy"] + [r for r in errors if r["intent"] == "healthy"]
    onset_errors = {r["case"]: r["onset_error"] for r in scored if r.get("onset_error") is not None}
    absolute = sorted(abs(v) for v in onset_errors.values())

    def share(rows, key):
        return round(sum(bool(r.get(key)) for r in rows) / len(rows), 3) if rows else None

    return {
        "set": "heldout",
        "cases": len(results),
        "pathology_cases": len(pathology),
        "healthy_cases": len(healthy),
        "strict_score": share(pathology, "strict_right"),
        "kind_score": share(pathology, "kind_right"),
        "false_flags_healthy": sum(r.get("false_flags", 0) for r in healthy),
        "healthy_runs_flagged": sum(bool(r.get("false_flags")) for r in healthy),
        "harmful_remedies": sum(len(r.get("harmful_remedies") or []) for r in scored),
        "onset_error_steps": {"median": absolute[len(absolute) // 2] if absolute else None,
                              "max": absolute[-1] if absolute else None, "per_case": onset_errors},
        "tolerance_steps": TOLERANCE_STEPS,
        "layers_wrong": sum(r.get("layers_right") is False for r in scored),
        "unexpected_flags": sum(len(r.get("unexpected") or []) for r in scored if r["truth"] != "healthy"),
        "errors": len(errors),
        "intent_not_truth": sorted(r["case"] for r in scored if r["truth"] != r["intent"]),
        "wall_seconds": round(wall, 1),
    }


def format_table(results: list[dict]) -> str:
    header = (f"{'case':<32} {'truth':<13} {'onset':>5} {'fired':<44} {'kind':<4} {'onset err':>9} "
              f"{'layers':<6} {'remedy':<6} {'strict':<6} {'s':>5}")
    lines = [header, "-" * len(header)]
    for r in results:
        if r.get("error"):
            lines.append(f"{r['case']:<32} ERROR {r['error']}")
            continue
        err = "-" if r.get("onset_error") is None else f"{r['onset_error']:+d}"
        truth = r["truth"] + ("" if r["truth"] == r["intent"] else "*")
        onset = "-" if r["truth_onset"] is None else str(r["truth_onset"])
        layers = {None: "-", True: "ok", False: "WRONG"}[r.get("layers_right")]
        lines.append(f"{r['case']:<32} {truth:<13} {onset:>5} {','.join(r['fired']) or '-':<44} "
                     f"{'yes' if r['kind_right'] else 'no':<4} {err:>9} {layers:<6} "
                     f"{'yes' if r['remedy_right'] else '-':<6} {'YES' if r['strict_right'] else 'no':<6} "
                     f"{r['seconds']:>5.1f}" + (f"  harmful: {','.join(r['harmful_remedies'])}"
                                                if r["harmful_remedies"] else ""))
    if any(not r.get("error") and r["truth"] != r["intent"] for r in results):
        lines.append("(* the measured truth differs from what the case injected: the truth is scored)")
    return "\n".join(lines)


def run_cases(case_ids: list[str], logdir: Path, jobs: int, progress=None) -> list[dict]:
    """Each case in its own spawned process: global optimizer hooks and seeds never leak between cases."""
    results = []
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(evaluate_case, case_ids, [str(logdir)] * len(case_ids)):
            results.append(result)
            if progress:
                progress(result)
    return results


def select(quick: bool, only: str | None, seeds: int = 1) -> list[HeldoutCase]:
    """The cases to run: --only's ids, else all (or the quick ones), each with `seeds` seed offsets."""
    if only:
        cases = [get_case(case_id.strip()) for case_id in only.split(",") if case_id.strip()]
    else:
        cases = [case for case in CASES if case.quick or not quick]
    return [with_seed(case, k) for k in range(seeds) for case in cases]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: the few cases marked quick")
    parser.add_argument("--only", help="comma-separated case ids")
    parser.add_argument("--seeds", type=int, default=1, help="run each case with this many seeds (ids -s1, -s2, ...)")
    parser.add_argument("--jobs", type=int, default=1, help="cases trained in parallel processes (default 1)")
    parser.add_argument("--logdir", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--json-out", default=None, help="also write the per-case results here")
    args = parser.parse_args(argv)
    try:
        if args.seeds < 1:
            raise KeyError(f"--seeds must be 1 or more, got {args.seeds}")
        cases = select(args.quick, args.only, args.seeds)
    except KeyError as exc:
        parser.error(exc.args[0])
    if args.list:
        for case in cases:
            print(f"{case.id:<32} {case.codebase:<19} {case.intent:<13} {case.note}")
        return {}
    logdir = Path(args.logdir) if args.logdir else Path(tempfile.mkdtemp(prefix="gradwatch-heldout-"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"held-out diagnosis evaluation: {len(cases)} cases; run folders in {logdir}", flush=True)

    def progress(result):
        status = result.get("error") or f"truth {result['truth']}, fired {','.join(result['fired']) or '-'}"
        print(f"  {result['case']:<32} {status}; {result['seconds']:.1f} s", flush=True)

    started = time.perf_counter()
    try:
        results = run_cases([case.id for case in cases], logdir, args.jobs, progress)
    finally:
        if not args.logdir:
            shutil.rmtree(logdir, ignore_errors=True)
    summary = summarise(results, time.perf_counter() - started)
    print()
    print(format_table(results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"summary": summary, "cases": results}, indent=1, default=_plain))
    print(json.dumps(summary, default=_plain))
    return {"summary": summary, "cases": results}


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)


if __name__ == "__main__":
    main()
