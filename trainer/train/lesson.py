"""The lesson suite: run every preset, summarise each run from its run folder, check the lesson's
claims, and format the comparison table (text for the terminal, Markdown for docs/lesson.md).

Summaries read only the run folder (torch-free), so a table can be rebuilt from old runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import derived
from ..presets import LESSON_SUITE, PRESETS
from ..runlog.reader import RunReader

# The claims' thresholds (the issue's "what it must show").
OVERFIT_TRAIN_LOSS = 0.1  # overfit: training loss below this by epoch 20
OVERFIT_BY_EPOCH = 20
OVERFIT_RISE = 1.3  # overfit: final val loss >= this x its minimum
BEST_TEST_ACCURACY = 0.78
VANISHING_GAP = 100.0  # vanishing: last-layer / first-layer gradient norm
RELU_NARROWING = 10.0  # relu: gap narrower by this factor
EXPLODING_GROWTH = 100.0  # exploding: gradient norm grows by this factor (or turns NaN/Inf)
REMEDIES = ("l1", "l2", "dropout", "early-stopping", "smaller", "batchnorm", "augment", "regularized")


@dataclass
class RunSummary:
    """The facts the table and the claims use, for one run folder."""

    preset: str
    path: Path
    status: str
    results: dict
    config: dict
    val_loss: list[float] = field(default_factory=list)  # per epoch
    train_loss: list[float] = field(default_factory=list)  # epoch_train_loss per epoch
    grad_norm_total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grad_norm_clipped: np.ndarray = field(default_factory=lambda: np.zeros(0))
    step_train_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grad_gap: float = float("nan")  # median over logged steps of |grad| last layer / first layer
    first_layer: str | None = None
    last_layer: str | None = None

    @property
    def best_val_loss(self) -> float:
        best = derived.per_epoch_summary(self.val_loss)["best_val_loss"]
        return float("nan") if best is None else best

    @property
    def best_epoch(self) -> int | None:
        return derived.per_epoch_summary(self.val_loss)["best_epoch"]

    @property
    def final_val_loss(self) -> float:
        """Validation loss of the final model (restored best weights included)."""
        value = self.results.get("val_loss")
        if value is None and self.val_loss:
            value = self.val_loss[-1]
        return float("nan") if value is None else float(value)

    @property
    def final_gap(self) -> float:
        value = self.results.get("final_gap")
        return float("nan") if value is None else float(value)

    @property
    def test_accuracy(self) -> float:
        value = derived.test_metrics(self.results)["test_accuracy"]
        return float("nan") if value is None else value

    @property
    def test_macro_f1(self) -> float:
        value = derived.test_metrics(self.results)["test_macro_f1"]
        return float("nan") if value is None else value

    @property
    def grad_growth(self) -> float:
        """max / first of grad_norm_total; inf when it became NaN/Inf."""
        norms = self.grad_norm_total
        if not len(norms):
            return float("nan")
        if not np.isfinite(norms).all():
            return float("inf")
        return float(norms.max() / norms[0]) if norms[0] > 0 else float("inf")

    @property
    def nonfinite(self) -> bool:
        return bool(len(self.grad_norm_total) and not np.isfinite(self.grad_norm_total).all()) or bool(
            len(self.step_train_loss) and not np.isfinite(self.step_train_loss).all())


def summarize(run_dir: str | os.PathLike, preset: str | None = None) -> RunSummary:
    """Read one run folder into a RunSummary."""
    with RunReader(run_dir) as reader:
        meta = reader.meta
        config = meta.get("config") or {}
        summary = RunSummary(
            preset=preset or config.get("preset") or meta.get("name", "?"),
            path=Path(run_dir),
            status=reader.status(),
            results=meta.get("results") or {},
            config=config,
        )
        series = {name: reader.scalar_series(name) for name in
                  ("val_loss", "epoch_train_loss", "grad_norm_total", "grad_norm_clipped", "train_loss")}
        summary.val_loss = series["val_loss"]["value"].tolist()
        summary.train_loss = series["epoch_train_loss"]["value"].tolist()
        summary.grad_norm_total = series["grad_norm_total"]["value"].to_numpy(dtype=float)
        summary.grad_norm_clipped = series["grad_norm_clipped"]["value"].to_numpy(dtype=float)
        summary.step_train_loss = series["train_loss"]["value"].to_numpy(dtype=float)
        summary.grad_gap, summary.first_layer, summary.last_layer = gradient_gap(reader)
    return summary


def gradient_gap(reader: RunReader) -> tuple[float, str | None, str | None]:
    """The run's gradient gap (trainer.derived.gradient_gap: median over logged steps of the last
    weighted layer's gradient norm / the first one's), with the two layer names."""
    facts = derived.run_summary(reader)
    return facts["grad_gap"], facts["first_layer"], facts["last_layer"]


# ---- claims --------------------------------------------------------------------------------------
@dataclass
class Claim:
    name: str
    passed: bool | None  # None: could not be checked (a run missing)
    measured: str


def shortened(run: RunSummary | None) -> str | None:
    """Why a run cannot test the regularisation claims, or None: they describe the presets' full
    length (overfit's 20 epochs), and `lesson --epochs 3` stops before overfitting begins."""
    if run is None:
        return None
    full = PRESETS[run.preset].overrides.get("epochs") if run.preset in PRESETS else None
    ran = run.config.get("epochs")
    if isinstance(full, int) and isinstance(ran, int) and not isinstance(ran, bool) and ran < full:
        return f"not checked: {run.preset} ran {ran} of its {full} epochs (--epochs)"
    return None


def check_claims(runs: dict[str, RunSummary]) -> list[Claim]:
    """The lesson's claims, each with what was measured. Missing runs give passed=None; so do the
    regularisation claims (overfit, remedies, early stopping, best accuracy) when the runs were
    shortened with --epochs: those claims are about the full-length presets."""
    claims = _claims(runs)
    reason = next((r for r in (shortened(runs.get(name)) for name in ("overfit", *REMEDIES)) if r), None)
    if reason is None:
        return claims
    regularisation = ("overfit", "best preset", *(f"{name}:" for name in REMEDIES))
    return [Claim(c.name, None, f"{reason}; measured {c.measured}") if c.name.startswith(regularisation) else c
            for c in claims]


def _claims(runs: dict[str, RunSummary]) -> list[Claim]:
    claims: list[Claim] = []
    overfit = runs.get("overfit")
    if overfit is not None:
        epoch = min(OVERFIT_BY_EPOCH, len(overfit.train_loss))
        train_at = overfit.train_loss[epoch - 1] if epoch else float("nan")
        final, best = (overfit.val_loss[-1] if overfit.val_loss else float("nan")), overfit.best_val_loss
        ok = train_at < OVERFIT_TRAIN_LOSS and final >= OVERFIT_RISE * best and (overfit.best_epoch or 99) <= len(
            overfit.val_loss) // 2
        claims.append(Claim(
            "overfit: training loss < 0.1 by epoch 20; validation loss passes its minimum early and ends >= 1.3x it",
            ok, f"train loss {train_at:.4f} at epoch {epoch}; val loss min {best:.3f} at epoch {overfit.best_epoch} "
                f"of {len(overfit.val_loss)}, final {final:.3f} ({final / best:.2f}x)"))
    for name in REMEDIES:
        run = runs.get(name)
        if overfit is None or run is None:
            claims.append(Claim(f"{name}: final validation loss below overfit's", None, "run missing"))
            continue
        claims.append(Claim(
            f"{name}: final validation loss below overfit's",
            run.status == "finished" and run.final_val_loss < overfit.final_val_loss,
            f"{run.final_val_loss:.3f} vs {overfit.final_val_loss:.3f}"))
    early = runs.get("early-stopping")
    if early is not None:
        patience = early.config.get("patience")
        stopped = early.results.get("epochs_run")
        best = early.best_epoch
        restored = bool(early.results.get("restored_best"))
        ok = (early.results.get("early_stopped") and best is not None and stopped - best <= patience and restored
              and math.isclose(early.final_val_loss, early.best_val_loss, rel_tol=1e-4))
        claims.append(Claim(
            "early-stopping: stops within patience of the minimum and restores the best weights", bool(ok),
            f"best epoch {best}, stopped after epoch {stopped} (patience {patience}); restored {restored}; final val "
            f"loss {early.final_val_loss:.4f} vs best {early.best_val_loss:.4f}"))
    text_runs = {n: r for n, r in runs.items() if r.config.get("dataset", "tweets") == "tweets"}
    finite = {n: r.test_accuracy for n, r in text_runs.items() if math.isfinite(r.test_accuracy)}
    if finite:
        best_name = max(finite, key=finite.get)
        claims.append(Claim(f"best preset reaches test accuracy >= {BEST_TEST_ACCURACY}",
                            finite[best_name] >= BEST_TEST_ACCURACY, f"{best_name}: {finite[best_name]:.4f}"))
    vanishing, relu = runs.get("vanishing"), runs.get("relu")
    if vanishing is not None:
        claims.append(Claim(
            f"vanishing: first layer's gradient norm >= {VANISHING_GAP:.0f}x smaller than the last layer's",
            vanishing.grad_gap >= VANISHING_GAP,
            f"median |grad {vanishing.last_layer}| / |grad {vanishing.first_layer}| = {vanishing.grad_gap:.3g}"))
        if relu is not None:
            narrowing = vanishing.grad_gap / relu.grad_gap
            claims.append(Claim(
                f"relu: narrows the gap >= {RELU_NARROWING:.0f}x", narrowing >= RELU_NARROWING,
                f"relu gap {relu.grad_gap:.3g}; {narrowing:.3g}x narrower"))
    exploding, clipping = runs.get("exploding"), runs.get("clipping")
    if exploding is not None:
        growth = exploding.grad_growth
        claims.append(Claim(
            f"exploding: gradient norms grow >= {EXPLODING_GROWTH:.0f}x or become NaN/Inf",
            exploding.nonfinite or growth >= EXPLODING_GROWTH,
            f"grad_norm_total first {_first(exploding.grad_norm_total):.3g}, max {_finite_max(exploding.grad_norm_total):.3g}"
            f"{', NaN/Inf reached' if exploding.nonfinite else ''}; status {exploding.status}"))
    if clipping is not None:
        limit = clipping.config.get("clip_norm")
        clipped_max = _finite_max(clipping.grad_norm_clipped)
        start = float(np.median(clipping.step_train_loss[:10])) if len(clipping.step_train_loss) else float("nan")
        end = clipping.results.get("train_loss", float("nan"))
        bounded = limit is not None and len(clipping.grad_norm_clipped) and bool(
            np.isfinite(clipping.grad_norm_clipped).all()) and clipped_max <= limit * (1 + 1e-3)
        trains = clipping.status == "finished" and not clipping.nonfinite and end < start
        claims.append(Claim(
            "clipping: gradient norms stay bounded and the network trains", bool(bounded and trains),
            f"clipped norm max {clipped_max:.3g} (clip_norm {limit}); pre-clip max "
            f"{_finite_max(clipping.grad_norm_total):.3g}; train loss {start:.3g} -> {end:.3g}; "
            f"test accuracy {clipping.test_accuracy:.3f}; status {clipping.status}"))
    return claims


def _first(values: np.ndarray) -> float:
    return float(values[0]) if len(values) else float("nan")


def _finite_max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)] if len(values) else values
    return float(finite.max()) if len(finite) else float("nan")


# ---- tables --------------------------------------------------------------------------------------
TABLE_COLUMNS = ("preset", "status", "epochs", "best val loss", "best epoch", "final val loss", "final gap",
                 "test acc", "macro-F1", "grad gap", "grad growth", "time s")


def table_rows(runs: dict[str, RunSummary]) -> list[list[str]]:
    rows = []
    for name, run in runs.items():
        r = run.results
        rows.append([
            name, run.status, str(r.get("epochs_run", len(run.val_loss))), _num(run.best_val_loss),
            str(run.best_epoch or "-"), _num(run.final_val_loss), _num(run.final_gap), _num(run.test_accuracy),
            _num(run.test_macro_f1), _num(run.grad_gap, "{:.3g}"), _num(run.grad_growth, "{:.3g}"),
            _num(r.get("train_seconds"), "{:.0f}"),
        ])
    return rows


def _num(value, fmt: str = "{:.3f}") -> str:
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return fmt.format(value)


def format_table(runs: dict[str, RunSummary]) -> str:
    rows = [list(TABLE_COLUMNS)] + table_rows(runs)
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_claims(claims: list[Claim]) -> str:
    mark = {True: "PASS", False: "FAIL", None: "n/a "}
    return "\n".join(f"[{mark[c.passed]}] {c.name}: {c.measured}" for c in claims)


def markdown_table(runs: dict[str, RunSummary]) -> str:
    rows = table_rows(runs)
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_claims(claims: list[Claim]) -> str:
    mark = {True: "pass", False: "**FAIL**", None: "n/a"}
    return "\n".join(f"- {mark[c.passed]}: {c.name} - {c.measured}" for c in claims)


def suite_presets(only: list[str] | None = None) -> list[str]:
    """The suite's presets in table order (a subset with `only`, validated)."""
    if not only:
        return list(LESSON_SUITE)
    unknown = [name for name in only if name not in PRESETS]
    if unknown:
        from ..options import OptionsError

        raise OptionsError(f"unknown preset {', '.join(unknown)}; valid presets: {', '.join(PRESETS)}")
    return [name for name in LESSON_SUITE if name in only] + [n for n in only if n not in LESSON_SUITE]
