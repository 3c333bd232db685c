"""Diagnosis evaluation: train a labelled matrix of small runs and score the diagnosis rules on them.

Each case (bench/diagnosis_cases.py) is one pathology on one architecture (MLP, embedding model,
plain RNN, LSTM, small CNN), a healthy control, or one of the lesson's presets, trained through the
real training loop (trainer.train) into a run folder. The rules then run post hoc on the folder, and
the flags the trainer raised live are read back. Per case: the rules expected (must fire at warning
or critical), allowed (may fire), fired, missing and unexpected, and for each expected rule the
detection lag behind the step where an oracle (bench/diagnosis_oracles.py) says the pathology became
visible. Then per-rule precision and recall, the false flags on healthy runs and the wall time; the
last line is one JSON object.

    python bench/diagnosis_eval.py [--set dev|heldout] [--quick] [--only CASE[,CASE]] [--jobs N]
                                   [--data Tweets.csv] [--logdir DIR] [--device cpu]

`--set dev` (the default) is the development set: the labelled matrix below plus the third-party
development cases of bench/diagnosis_thirdparty.py (pytorch/examples word_language_model, vendored),
whose truth comes from plain torch. Rules may be tuned on it. `--set heldout` hands over to the
held-out set (bench/diagnosis_heldout.py, third-party code the rules were not written against).

Lag is measured by replaying the run's records: the rules run on the records up to each logged step
(every step with layer statistics, and every evaluation) and the first step where the expected flag
appears is its detection step. "lag" counts logged steps from the oracle's step to that one; for the
loss-curve rules (overfitting, underfitting) it is also given in evaluations. "live" is the same for
the step at which the trainer's LiveDiagnoser actually raised it (it checks at each epoch end and
every 20 logged steps, so it can only be later).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import diagnosis_stacks as stacks  # noqa: E402
from bench import diagnosis_userloops as userloops  # noqa: E402
from bench.diagnosis_cases import CASES as LESSON_CASES  # noqa: E402
from bench.diagnosis_cases import Case  # noqa: E402
from bench.diagnosis_cases import get_case as get_lesson_case  # noqa: E402
from bench.diagnosis_oracles import ORACLES  # noqa: E402

# The lesson's matrix, then runs of users' own loops on other architectures (LSTM language model,
# GPT-2, residual MLP, frozen fine-tune, accumulation, schedules; every=1, 10 and 100), then runs
# recorded through the Lightning and HF Trainer integrations.
CASES = LESSON_CASES + userloops.CASES + stacks.CASES
OWN_LABELS = (userloops.LoopCase, stacks.StackCase)  # cases that list their own harmful remedies
# Remedies that would do harm, by how a lesson case was built (the user-loop cases list their own).
DIVERGING = ("exploding_gradient", "nonfinite", "loss_divergence")


def get_case(case_id: str):
    if case_id in userloops.CASE_IDS:
        return userloops.get_case(case_id)
    if case_id in stacks.CASE_IDS:
        return stacks.get_case(case_id)
    return get_lesson_case(case_id)


def harmful_remedies(case) -> set[str]:
    """Remedy ids that would make this case worse or that it already applies."""
    if isinstance(case, OWN_LABELS):
        return set(case.harmful)
    harmful = set()
    if case.options.get("clip_norm") or case.preset == "clipping":
        harmful.add("clipping")
    if case.arch == "lstm":
        harmful |= {"relu", "batchnorm", "lstm"}
    if set(case.expected) & set(DIVERGING):
        harmful.add("higher-lr")
    return harmful

# The real file sits in shared/ beside the checkout (the CI copy too); /work/shared is where
# the developers' machines keep it.
DEFAULT_TWEETS = next(
    (p for p in (Path(__file__).resolve().parents[2] / "shared" / "data" / "Tweets.csv",
               Path("/work/shared/data/Tweets.csv")) if p.exists()),
    Path("/work/shared/data/Tweets.csv"),
)
ACTIVE = ("warning", "critical")
EPOCH_RULES = ("overfitting", "underfitting")
# Targets: detection within this many logged steps of the oracle (per-step rules) or evaluations
# (loss-curve rules). The rules' "sustained" windows are 5 (10 for learning_rate) logged steps and
# overfitting needs a confirmed trend, so these leave a few steps beyond the windows themselves.
MAX_LAG_LOGGED_STEPS = 10
MAX_LAG_EVALUATIONS = 4


# ---- one run ----------------------------------------------------------------------------------
def case_options(case: Case, *, quick: bool, data_path: str | None, device: str) -> dict:
    from gradwatch.trainer import presets

    overrides = dict(case.options)
    if quick and case.quick:
        overrides.update(case.quick)
    overrides.update(threads=1, device=device)
    options = presets.resolve(case.preset, overrides)
    if options["dataset"] == "tweets" and data_path and not options["data"]:
        options["data"] = data_path
    return options


_DATA_CACHE: dict = {}


def load_data(options: dict):
    from gradwatch.trainer.train.data import load_training_data

    keys = ("dataset", "data", "representation", "max_vocab", "min_freq", "max_len", "stopwords", "limit",
            "augment_rate", "augment_copies", "seed")
    key = tuple(options[k] for k in keys)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_training_data(options)
    return _DATA_CACHE[key]


def train_case(case: Case, logdir: Path, *, quick: bool, data_path: str | None, device: str):
    """Train one case into `logdir`; returns the TrainOutcome."""
    import torch

    from gradwatch.trainer.models import build_model
    from gradwatch.trainer.train import Setup, resolve_device, seed_everything, train_setup

    options = case_options(case, quick=quick, data_path=data_path, device=device)
    torch.set_num_threads(1)
    dataset = load_data(options)
    if case.data is not None:
        dataset = case.data(options, dataset)
    seed_everything(options["seed"])
    if case.model is not None:
        model = case.model(options, dataset)
        options = {**options, "model": case.arch}
    else:
        vocab = len(dataset.vocab) if dataset.vocab is not None else None
        model = build_model(options, dataset.input_shape, dataset.n_classes, vocab)
    if case.tweak is not None:
        model = case.tweak(model)
    torch_device = resolve_device(options["device"])
    setup = Setup(options, dataset, model.to(torch_device), torch_device)
    return train_setup(setup, preset=case.preset, logdir=logdir, name=case.id, quiet=True)


# ---- scoring ----------------------------------------------------------------------------------
def truncated(data, step: int):
    """The RunData the rules would have seen with records up to `step`."""
    from gradwatch.trainer.diagnose import LayerViews, RunData

    views = data.views
    frames = [f.loc[f.index <= step] for f in (views.grad_norm, views.weight_norm, views.update_ratio,
                                                views.saturated, views.dead)]
    nonfinite = views.nonfinite[views.nonfinite["step"] <= step]
    series = {name: data.scalar(name) for name in data.scalar_names}
    series = {name: s[s.index <= step] for name, s in series.items()}
    return RunData(None, None, data.tensors, data.meta, data.run_id, views=LayerViews(*frames, nonfinite),
                   scalar_series=series)


def replay_detection(data, rule: str) -> int | None:
    """First logged step (or evaluation, or last recorded step) at which `rule` flags the run at
    warning or critical with only the records up to that step."""
    from gradwatch.trainer.diagnose import diagnose, evaluation_table

    steps = set(data.views.grad_norm.index.tolist()) | set(evaluation_table(data).index.tolist())
    if rule == "loss_divergence":  # judged on every logged loss, between logged layer steps too
        steps |= set(data.scalar("train_loss").index.tolist())
    recorded = [int(s.index.max()) for s in (data.scalar(n) for n in data.scalar_names) if len(s)]
    if recorded:
        steps.add(max(recorded))  # a run halted on NaN/Inf ends between logged steps
    for step in sorted(steps):
        if any(f.severity in ACTIVE for f in diagnose(truncated(data, step), rules=[rule])):
            return int(step)
    return None


def logged_lag(grid: list[int], start: int | None, end: int | None) -> int | None:
    """Logged steps from `start` to `end` (negative when `end` comes first)."""
    if start is None or end is None:
        return None
    if end >= start:
        return sum(1 for s in grid if start < s <= end)
    return -sum(1 for s in grid if end < s <= start)


def score_case(case: Case, outcome, seconds: float, cpu: float) -> dict:
    from gradwatch.trainer.diagnose import RunData, diagnose, evaluation_table, expand_absorbed
    from gradwatch.trainer.runlog import RunReader

    with RunReader(outcome.run_path) as reader:
        data = RunData.from_reader(reader)
        live, _ = reader.flags()
    cards = diagnose(data)
    # A cause-chain card (exploding -> diverging -> NaN) counts for each rule it tells.
    flags = expand_absorbed(cards)
    fired: dict[str, str] = {}
    notes: list[str] = []
    for flag in flags:
        if flag.severity in ACTIVE:
            if flag.rule not in fired or flag.severity == "critical":
                fired[flag.rule] = flag.severity
        else:
            notes.append(flag.rule)
    live_fired = sorted({f["rule"] for f in live if f.get("severity") in ACTIVE})
    grid = sorted(set(data.views.grad_norm.index.tolist()))
    evals = evaluation_table(data).index.tolist()
    lags = {}
    for rule in case.expected:
        oracle = ORACLES[rule](data)
        detected = replay_detection(data, rule) if rule in fired else None
        first = next((f.first_step for f in flags if f.rule == rule and f.severity in ACTIVE), None)
        raised = next((f.get("raised_step") for f in live if f["rule"] == rule and f.get("severity") in ACTIVE), None)
        lag = {"oracle_step": oracle, "detected_step": detected, "first_step": first, "raised_step": raised,
               "lag_steps": None if oracle is None or detected is None else int(detected - oracle),
               "lag_logged": logged_lag(grid, oracle, detected), "live_lag_logged": logged_lag(grid, oracle, raised),
               "onset_logged": logged_lag(grid, oracle, first)}
        if rule in EPOCH_RULES:
            lag["lag_evaluations"] = logged_lag(evals, oracle, detected)
        lags[rule] = lag
    missing = [r for r in case.expected if r not in fired]
    bad = harmful_remedies(case)
    harmful = sorted({f"{f.rule}:{r}" for f in flags if f.severity in ACTIVE for r in f.remedy_ids if r in bad})
    check_failures = []
    for rule, (step, tolerance) in getattr(case, "flag_near_step", {}).items():
        found = [f.first_step for f in flags if f.rule == rule and f.severity in ACTIVE]
        if not found or abs(found[0] - step) > tolerance:
            check_failures.append(f"{rule} not flagged within {tolerance} steps of step {step} (got {found})")
    check_failures += remedy_code_failures(flags, getattr(case, "remedy_code", {}))
    for rule, layers in getattr(case, "no_layers", {}).items():
        named = [layer for f in flags if f.rule == rule for layer in f.layers if layer in layers]
        if named:
            check_failures.append(f"{rule} names {named}")
    # A flag the trainer raised live and stored with the run counts even if the post-hoc
    # diagnosis of the finished run no longer raises it.
    raised = list(fired) + [r for r in live_fired if r not in fired]
    unexpected = [r for r in raised if r not in case.expected and r not in case.allowed]
    return {
        "case": case.id, "arch": case.arch, "group": case.group, "expected": list(case.expected),
        "allowed": list(case.allowed), "fixes": list(getattr(case, "fixes", ())), "fired": fired,
        "info": sorted(set(notes)), "harmful_remedies": harmful, "check_failures": check_failures,
        "every": _every(data), "cards": sum(1 for f in cards if f.severity in ACTIVE),
        "live_fired": live_fired, "raised": raised, "missing": missing, "unexpected": unexpected, "lags": lags,
        "status": outcome.status, "logged_steps": len(grid), "evaluations": len(evals),
        "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "run": str(outcome.run_path),
    }


def remedy_code_failures(flags, wanted: dict) -> list[str]:
    """Where a remedy the case names is missing from its active flags, or its code lacks the
    text for the run's stack (Lightning's gradient_clip_val, HF's max_grad_norm)."""
    failures = []
    for remedy, text in wanted.items():
        codes = [code for f in flags if f.severity in ACTIVE for r, code in zip(f.remedy_ids, f.remedy_code)
                 if r == remedy]
        if not codes:
            failures.append(f"no active flag offers {remedy!r}")
        failures += [f"{remedy!r} code lacks {text!r}: {code!r}" for code in codes if text not in code]
    return failures


class LoopOutcome:
    """What score_case reads of a user-loop run (the lesson runs return a TrainOutcome)."""

    def __init__(self, run_path):
        from gradwatch.trainer.runlog import RunReader

        self.run_path = run_path
        with RunReader(run_path) as reader:
            self.status = reader.status()


def evaluate_case(case_id: str, logdir: str, quick: bool, data_path: str | None, device: str) -> dict:
    """Train and score one case (the unit of work a --jobs worker runs)."""
    case = get_case(case_id)
    wall, cpu = time.perf_counter(), time.process_time()
    if isinstance(case, userloops.LoopCase):
        import torch

        torch.set_num_threads(1)
        outcome = LoopOutcome(userloops.train_loop_case(case, Path(logdir)))
    elif isinstance(case, stacks.StackCase):
        import torch

        torch.set_num_threads(1)
        outcome = LoopOutcome(stacks.train_stack_case(case, Path(logdir)))
    else:
        outcome = train_case(case, Path(logdir), quick=quick, data_path=data_path, device=device)
    return score_case(case, outcome, time.perf_counter() - wall, time.process_time() - cpu)


# ---- the matrix -------------------------------------------------------------------------------
def lag_ok(result: dict) -> bool:
    for rule, lag in result["lags"].items():
        if rule in EPOCH_RULES:
            value, bound = lag.get("lag_evaluations"), MAX_LAG_EVALUATIONS
        else:
            value, bound = lag["lag_logged"], MAX_LAG_LOGGED_STEPS
        if value is not None and value > bound:
            return False
    return True


def summarise(results: list[dict], wall: float) -> dict:
    rules = sorted({r for res in results for r in res["expected"]} | {r for res in results for r in res["raised"]})
    per_rule = {}
    for rule in rules:
        expected = [r for r in results if rule in r["expected"]]
        tp = sum(rule in r["fired"] for r in expected)
        fp = sum(rule in r["raised"] and rule not in r["expected"] and rule not in r["allowed"] for r in results)
        per_rule[rule] = {
            "precision": round(tp / (tp + fp), 3) if tp + fp else None,
            "recall": round(tp / len(expected), 3) if expected else None,
            "tp": tp, "fp": fp, "cases": len(expected),
        }
    pathology = [r for r in results if r["expected"]]
    healthy = [r for r in results if not r["expected"]]
    recall = sum(not r["missing"] for r in pathology) / len(pathology) if pathology else None
    false_flags = sum(len(r["raised"]) for r in healthy)
    step_lags = [lag["lag_logged"] for r in results for rule, lag in r["lags"].items()
                 if rule not in EPOCH_RULES and lag["lag_logged"] is not None]
    live_lags = [lag["live_lag_logged"] for r in results for rule, lag in r["lags"].items()
                 if rule not in EPOCH_RULES and lag["live_lag_logged"] is not None]
    eval_lags = [lag["lag_evaluations"] for r in results for rule, lag in r["lags"].items()
                 if rule in EPOCH_RULES and lag.get("lag_evaluations") is not None]
    unexpected = sum(len(r["unexpected"]) for r in results)
    harmful = sum(len(r.get("harmful_remedies") or []) for r in results)
    check_failures = sum(len(r.get("check_failures") or []) for r in results)
    optimizer_lags = [lag["lag_steps"] for r in results for lag in r["lags"].values() if lag.get("lag_steps") is not None]
    met = (
        (recall is None or recall == 1.0) and false_flags == 0 and unexpected == 0 and harmful == 0
        and check_failures == 0
        and all(lag_ok(r) for r in results)
        and all(not r["missing"] and not r["unexpected"] for r in results if r["group"] == "lesson")
    )
    return {
        "cases": len(results),
        "pathology_cases": len(pathology),
        "healthy_cases": len(healthy),
        "pathology_recall": round(recall, 3) if recall is not None else None,
        "healthy_false_flags": false_flags,
        "unexpected_flags": unexpected,
        "per_rule": {rule: {"precision": v["precision"], "recall": v["recall"]} for rule, v in per_rule.items()},
        "max_lag_steps": max(step_lags) if step_lags else None,
        "max_lag_evaluations": max(eval_lags) if eval_lags else None,
        "max_live_lag_steps": max(live_lags) if live_lags else None,
        "max_lag_optimizer_steps": max(optimizer_lags) if optimizer_lags else None,
        "harmful_remedies": harmful,
        "check_failures": check_failures,
        "cadences": sorted({r["every"] for r in results if r.get("every")}),
        "wall_seconds": round(wall, 1),
        "all_targets_met": bool(met),
        "_per_rule_counts": per_rule,
    }


# ---- report -----------------------------------------------------------------------------------
SHORT = {"nonfinite": "nonfinite", "vanishing_gradient": "vanishing", "exploding_gradient": "exploding",
         "dead_units": "dead", "saturated_units": "saturated", "overfitting": "overfit", "underfitting": "underfit",
         "learning_rate": "lr", "loss_divergence": "divergence"}


def _names(rules) -> str:
    return ",".join(SHORT.get(r, r) for r in rules) or "-"


def _lag_text(result: dict) -> str:
    parts = []
    for rule, lag in result["lags"].items():
        if lag["lag_logged"] is None:
            # no oracle step (e.g. never 100x its first norm) or not detected
            parts.append(f"{SHORT[rule]} " + ("-" if lag["detected_step"] is None else "n/a"))
            continue
        text = f"{SHORT[rule]} {lag['lag_logged']:+d}"
        if rule in EPOCH_RULES and lag.get("lag_evaluations") is not None:
            text += f" ({lag['lag_evaluations']:+d} ev)"
        if lag["live_lag_logged"] is not None:
            text += f" live {lag['live_lag_logged']:+d}"
        parts.append(text)
    return "; ".join(parts) or "-"


def format_table(results: list[dict]) -> str:
    header = f"{'case':<22} {'arch':<9} {'expected':<19} {'fired':<22} {'missing':<9} {'unexpected':<10} " \
             f"{'lag (logged steps)':<36} {'s':>5}"
    lines = [header, "-" * len(header)]
    for r in results:
        fired = ",".join(SHORT[k] + ("!" if v == "critical" else "") for k, v in r["fired"].items())
        live_only = [k for k in r["raised"] if k not in r["fired"]]
        if live_only:
            fired += ("," if fired else "") + ",".join(f"{SHORT[k]}(live)" for k in live_only)
        fired = fired or "-"
        if r["info"]:
            fired += " (i:" + _names(r["info"]) + ")"
        expected = _names(r["expected"]) if r["expected"] else ("no " + _names(r["fixes"]) if r["fixes"] else "none")
        ok = " " if not r["missing"] and not r["unexpected"] and lag_ok(r) else "x"
        lines.append(f"{r['case']:<22} {r['arch']:<9} {expected:<19} {fired:<22} {_names(r['missing']):<9} "
                     f"{_names(r['unexpected']):<10} {_lag_text(r):<36} {r['seconds']:>5.1f} {ok}")
    return "\n".join(lines)


def format_rules(summary: dict) -> str:
    lines = [f"{'rule':<20} {'precision':>9} {'recall':>7} {'tp':>3} {'fp':>3} {'cases':>5}"]
    for rule, v in summary["_per_rule_counts"].items():
        precision = "-" if v["precision"] is None else f"{v['precision']:.2f}"
        recall = "-" if v["recall"] is None else f"{v['recall']:.2f}"
        lines.append(f"{rule:<20} {precision:>9} {recall:>7} {v['tp']:>3} {v['fp']:>3} {v['cases']:>5}")
    return "\n".join(lines)


def format_healthy(results: list[dict]) -> str:
    healthy = [r for r in results if not r["expected"]]
    flagged = [f"{r['case']}: {', '.join(r['raised'])}" for r in healthy if r["raised"]]
    head = (f"Healthy runs: {len(healthy)}, warning/critical flags on them (post hoc or raised live): "
            f"{sum(len(r['raised']) for r in healthy)}")
    return "\n".join([head] + [f"  {line}" for line in flagged])


# ---- CLI --------------------------------------------------------------------------------------
def select_cases(quick: bool, only: str | None) -> list[Case]:
    if only:
        return [get_case(case_id.strip()) for case_id in only.split(",") if case_id.strip()]
    return [case for case in CASES if not quick or getattr(case, "quick", None) is not None]


def run_matrix(cases: list[Case], logdir: Path, *, quick: bool, data_path: str | None, device: str, jobs: int,
               progress=None) -> list[dict]:
    args = [(case.id, str(logdir), quick, data_path, device) for case in cases]
    results = []
    if jobs <= 1:
        for arg in args:
            results.append(evaluate_case(*arg))
            if progress:
                progress(results[-1])
        return results
    import multiprocessing

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(evaluate_case, *zip(*args)):
            results.append(result)
            if progress:
                progress(result)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the reduced matrix (tests): cheap cases, small data")
    parser.add_argument("--only", help="comma-separated case ids")
    parser.add_argument("--user-loops", action="store_true", help="only the user-loop cases (other architectures, "
                                                                  "every=1/10/100), ~1 CPU minute")
    parser.add_argument("--stacks", action="store_true", help="only the cases recorded through the Lightning "
                                                               "and HF Trainer integrations")
    parser.add_argument("--jobs", type=int, default=1, help="cases trained in parallel processes (default 1)")
    parser.add_argument("--data", default=None, help="Tweets.csv (default: /work/shared/data/Tweets.csv when "
                                                      "present, else the built-in dataset; 'builtin' forces it)")
    parser.add_argument("--logdir", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--json-out", default=None, help="also write the per-case results and summary here")
    parser.add_argument("--set", dest="case_set", default="dev", choices=("dev", "heldout"),
                        help="dev (default): the project's labelled matrix plus the third-party development "
                             "cases (bench/diagnosis_thirdparty.py) - rules may be tuned on these. heldout: "
                             "hands over to bench/diagnosis_heldout.py (third-party code the rules were not "
                             "written against; never tune a rule while reading its results)")
    args = parser.parse_args(argv)
    if args.case_set == "heldout":
        try:
            from bench import diagnosis_heldout
        except ImportError:
            parser.error("the held-out set (bench/diagnosis_heldout.py) is not in this checkout")
        return diagnosis_heldout.main([])

    if args.user_loops or args.stacks:
        cases = (list(userloops.CASES) if args.user_loops else []) + (list(stacks.CASES) if args.stacks else [])
    else:
        cases = select_cases(args.quick, args.only)
    if args.list:
        for case in cases:
            print(f"{case.id:<20} {case.arch:<9} {case.group:<9} expected={_names(case.expected)} "
                  f"allowed={_names(case.allowed)} {case.note}")
        return {}
    if args.data == "builtin":
        data_path = None
    else:
        data_path = args.data or (str(DEFAULT_TWEETS) if DEFAULT_TWEETS.exists() else None)
    logdir = Path(args.logdir) if args.logdir else Path(tempfile.mkdtemp(prefix="gradwatch-diag-eval-"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"diagnosis evaluation: {len(cases)} cases{' (quick)' if args.quick else ''}; tweets: "
          f"{data_path or 'built-in dataset'}; run folders in {logdir}", flush=True)

    def progress(result):
        print(f"  {result['case']:<20} fired {_names(result['fired'])}; {result['seconds']:.1f} s", flush=True)

    started = time.perf_counter()
    try:
        results = run_matrix(cases, logdir, quick=args.quick, data_path=data_path, device=args.device,
                             jobs=args.jobs, progress=progress)
    finally:
        if not args.logdir:
            shutil.rmtree(logdir, ignore_errors=True)
    summary = summarise(results, time.perf_counter() - started)
    thirdparty = None
    if not (args.only or args.user_loops or args.stacks or args.quick):
        # The development set's third-party code (word_language_model as vendored), scored strictly
        # against its plain-torch oracle.
        from bench import diagnosis_thirdparty

        thirdparty = diagnosis_thirdparty.evaluate(logdir=Path(args.logdir) if args.logdir else None)
        summary["thirdparty_dev"] = thirdparty["summary"]
    summary["set"] = "dev"
    print()
    print(format_table(results))
    print()
    print(format_rules(summary))
    print()
    print(format_healthy(results))
    if thirdparty is not None:
        print()
        print("Third-party development cases (plain-torch oracle, strict: kind, onset within "
              f"{diagnosis_thirdparty.ONSET_TOLERANCE} steps, fitting remedy, no harmful remedy):")
        for r in thirdparty["results"]:
            print(f"  {r['case']:<16} truth {r['truth']:<9} strict {r['strict']!s:<5} flags {', '.join(r['flags']) or '-'}")
    cpu = sum(r["cpu_seconds"] for r in results)
    print(f"Wall time {summary['wall_seconds']:.1f} s (training + scoring; CPU of the runs {cpu:.1f} s)")
    public = {k: v for k, v in summary.items() if not k.startswith("_")}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"summary": public, "cases": results}, indent=1, default=_plain))
    print(json.dumps(public, default=_plain))
    return {"summary": public, "cases": results}


def _every(data) -> int | None:
    watch = data.meta.get("watch") if isinstance(data.meta.get("watch"), dict) else {}
    every = watch.get("every") or data.config_value("every")
    return int(every) if isinstance(every, (int, float)) else None


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)


if __name__ == "__main__":
    main()
