"""Third-party training code in the diagnosis evaluation's DEVELOPMENT set, scored against a plain-torch oracle.

pytorch/examples' word_language_model (vendored in bench/thirdparty_dev/, its own hand-written SGD
update, so gradwatch sees it through `run.step()`) is run with about ten lines of glue on a Markov
token corpus (no download). Its issue-18 failure reports came from this code, so it is a development
case: the rules may be tuned while looking at it. The held-out set (other code, other helper) is never
run or read here.

Truth comes from torch in the same process, not from any gradwatch rule: the per-step loss, the
gradient norms per parameter as the update used them, NaN/Inf, and ln K for K = the vocabulary.

    kind        when (first match)
    nonfinite   a loss or gradient turned NaN/Inf
    zero        every gradient exactly zero in >= 80% of the steps
    exploding   a step whose total gradient norm is >= 100x the median of the steps before it (from the
                third step on)
    worse       the last 5 losses average above ln K (worse than a uniform guess, the untrained level)
    healthy     otherwise, with the last losses below 0.9 ln K

Strict score per case: the kind's rule fires at warning/critical (a cause-chain card counts for the
rules it tells), its onset within `ONSET_TOLERANCE` steps of the oracle's, a fitting remedy offered,
and no harmful remedy; a healthy case passes with no warning/critical flag at all.

    python bench/diagnosis_thirdparty.py [--only CASE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ONSET_TOLERANCE = 3
KIND_RULES = {
    "nonfinite": ("nonfinite", "exploding_gradient", "loss_divergence"),
    "zero": ("zero_gradients",),
    "exploding": ("exploding_gradient", "loss_divergence"),
    "worse": ("loss_divergence",),
}
FITTING = {"nonfinite": ("clipping", "lower-lr"), "zero": ("zero-grad",), "exploding": ("clipping", "lower-lr"),
           "worse": ("lower-lr", "clipping")}
# For an LSTM language model: activations/normalisation it cannot use, an LSTM it already is, and
# "raise the lr" for any run that blows up, is zeroed or ends worse than untrained.
HARMFUL = ("relu", "batchnorm", "lstm", "leaky-relu", "higher-lr")


@dataclass(frozen=True)
class ThirdPartyCase:
    id: str
    code: str  # where the training code comes from
    lr: float
    clip: float
    every: int
    batches: int
    note: str = ""


DEV_CASES = (
    ThirdPartyCase("wlm-recipe", "pytorch/examples word_language_model", lr=20.0, clip=0.25, every=10, batches=120,
                   note="the example's own recipe: SGD lr 20, clip 0.25"),
    ThirdPartyCase("wlm-noclip-e10", "pytorch/examples word_language_model", lr=20.0, clip=1e9, every=10,
                   batches=60, note="clip 1e9 (clipping off as users write it), watched at every=10"),
    ThirdPartyCase("wlm-clip0", "pytorch/examples word_language_model", lr=20.0, clip=0.0, every=10, batches=60,
                   note="clip 0: every gradient scaled to zero"),
    ThirdPartyCase("wlm-lr100", "pytorch/examples word_language_model", lr=100.0, clip=0.25, every=10,
                   batches=120, note="lr 100 with the example's clip 0.25"),
)
CASE_IDS = tuple(c.id for c in DEV_CASES)


def run_wlm(case: ThirdPartyCase, logdir: Path, seed: int = 0) -> tuple[Path, dict]:
    """Train word_language_model as vendored, watched by gradwatch; returns (run folder, oracle records)."""
    import torch
    from torch import nn

    from bench.diagnosis_userloops import markov_tokens
    from bench.thirdparty_dev import word_language_model as wlm
    from gradwatch import Run

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    ntokens, bptt, batch_size = 1000, 35, 20
    corpus = torch.as_tensor(markov_tokens(seed, batch_size * (bptt * case.batches + 1), vocab=ntokens),
                             dtype=torch.long)
    train_data = wlm.batchify(corpus, batch_size)
    model = wlm.RNNModel("LSTM", ntokens, 64, 128, 2, dropout=0.2)
    truth = {"loss": [], "grad": [], "nonfinite": [], "zero": []}
    config = {"model": "LSTM", "lr": case.lr, "clip": case.clip, "bptt": bptt, "batch_size": batch_size,
              "ntokens": ntokens}
    # ---- the glue a user writes: a Run, watch, log the loss and mark each hand-written step ----
    with Run(logdir, name=case.id, config=config) as run:
        run.watch(model, every=case.every)

        def after_step(batch, loss):
            norms = [float(p.grad.norm()) for p in model.parameters() if p.grad is not None]
            truth["loss"].append(float(loss))
            truth["grad"].append(math.sqrt(sum(n * n for n in norms)))
            truth["nonfinite"].append(not all(math.isfinite(n) for n in norms) or not math.isfinite(float(loss)))
            truth["zero"].append(all(n == 0 for n in norms))
            run.log(batch, train_loss=float(loss))
            run.step()

        wlm.train(model, train_data, ntokens, case.lr, case.clip, bptt, batch_size, nn.NLLLoss(),
                  after_step=after_step, max_batches=case.batches)
        path = run.path
    truth["ln_k"] = math.log(ntokens)
    return path, truth


def oracle(truth: dict) -> tuple[str, int | None]:
    """(kind, onset step) from the plain-torch records."""
    loss = np.asarray(truth["loss"], dtype=float)
    grad = np.asarray(truth["grad"], dtype=float)
    bad = np.flatnonzero(np.asarray(truth["nonfinite"]))
    if len(bad):
        return "nonfinite", int(bad[0])
    zero = np.asarray(truth["zero"])
    if zero.mean() >= 0.8:
        return "zero", int(np.flatnonzero(zero)[0])
    for i in range(3, len(grad)):
        if grad[i] >= 100 * np.median(grad[:i]):
            return "exploding", i
    ln_k = truth["ln_k"]
    if loss[-5:].mean() > ln_k:
        below = np.flatnonzero(loss < ln_k)
        above = np.flatnonzero((loss > ln_k) & (np.arange(len(loss)) > (below[0] if len(below) else -1)))
        return "worse", int(above[0]) if len(above) else 0
    return "healthy", None


def score(case: ThirdPartyCase, path: Path, truth: dict) -> dict:
    from gradwatch.trainer.diagnose import RunData, diagnose, expand_absorbed
    from gradwatch.trainer.runlog import RunReader

    with RunReader(path) as reader:
        data = RunData.from_reader(reader)
    cards = diagnose(data)
    active = [f for f in cards if f.severity in ("warning", "critical")]
    kind, onset = oracle(truth)
    result = {"case": case.id, "code": case.code, "truth": kind, "oracle_onset": onset,
              "flags": [f"{f.rule}:{f.severity}@{f.first_step}" for f in active], "cards": len(active)}
    harmful = sorted({f"{f.rule}:{r}" for f in active for r in f.remedy_ids if r in HARMFUL})
    result["harmful_remedies"] = harmful
    if kind == "healthy":
        result.update(right_kind=not active, onset_error=None, fitting_remedy=True)
    else:
        told = [f for f in active if set(f.rules) & set(KIND_RULES[kind])]
        if kind == "worse":
            told = [f for f in told if any(
                (g.evidence.get("worse_than_untrained") or g.evidence.get("ends_above_start"))
                for g in expand_absorbed([f]) if g.rule == "loss_divergence")]
        first = min((f.first_step for f in told if f.first_step is not None), default=None)
        result.update(right_kind=bool(told), detected_onset=first,
                      onset_error=None if first is None or onset is None else int(first - onset),
                      fitting_remedy=any(r in FITTING[kind] for f in told for r in f.remedy_ids))
    result["strict"] = bool(
        result["right_kind"] and result["fitting_remedy"] and not harmful
        and (result["onset_error"] is None if kind == "healthy" else
             result["onset_error"] is not None and abs(result["onset_error"]) <= ONSET_TOLERANCE))
    return result


def evaluate(cases=DEV_CASES, logdir: Path | None = None) -> dict:
    """Run and score `cases`; returns {"results": [...], "summary": {...}}."""
    own = logdir is None
    folder = Path(tempfile.mkdtemp(prefix="gw-thirdparty-")) if own else Path(logdir)
    results = []
    started = time.perf_counter()
    for case in cases:
        path, truth = run_wlm(case, folder)
        results.append(score(case, path, truth))
    healthy = [r for r in results if r["truth"] == "healthy"]
    errors = [abs(r["onset_error"]) for r in results if r.get("onset_error") is not None]
    summary = {
        "set": "dev-thirdparty", "cases": len(results), "strict_correct": sum(r["strict"] for r in results),
        "strict_score": round(sum(r["strict"] for r in results) / max(1, len(results)), 3),
        "right_kind": sum(bool(r["right_kind"]) for r in results),
        "healthy_cases": len(healthy), "healthy_false_flags": sum(r["cards"] for r in healthy),
        "harmful_remedies": sum(len(r["harmful_remedies"]) for r in results),
        "max_onset_error_steps": max(errors) if errors else None,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if own:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return {"results": results, "summary": summary}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated case ids")
    parser.add_argument("--keep", default=None, help="keep the run folders here")
    args = parser.parse_args(argv)
    cases = DEV_CASES
    if args.only:
        wanted = args.only.split(",")
        unknown = [c for c in wanted if c not in CASE_IDS]
        if unknown:
            parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASE_IDS)}")
        cases = tuple(c for c in DEV_CASES if c.id in wanted)
    out = evaluate(cases, Path(args.keep) if args.keep else None)
    for r in out["results"]:
        print(f"{r['case']:16} truth {r['truth']:9} onset {r['oracle_onset']!s:5} strict {r['strict']!s:5} "
              f"flags {', '.join(r['flags']) or '-'}  harmful {', '.join(r['harmful_remedies']) or '-'}")
    print(json.dumps(out["summary"]))
    return out


if __name__ == "__main__":
    main()
