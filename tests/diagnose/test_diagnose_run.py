"""Diagnosis of real run folders written by RunWriter: diagnose_run, format_report, LiveDiagnoser,
bad inputs, speed, and the promise that importing the rules never imports torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradwatch.trainer.diagnose import (
    DiagnosisError,
    LiveDiagnoser,
    RunData,
    diagnose,
    diagnose_run,
    format_report,
)
from gradwatch.trainer.diagnose.data import LayerViews
from gradwatch.trainer.runlog import RunLogError, RunReader
from gradwatch.trainer.runlog.schema import KIND_CODES, STAT_FIELDS
from gradwatch.trainer.runlog.writer import LayerRecord, RunWriter

REPO = Path(__file__).resolve().parents[2]
LAYERS = [f"net.fc{i}" for i in range(1, 6)]


def tensor_table(activation: str = "Sigmoid") -> list[dict]:
    """fc1..fc5 (weight, bias) with act1..act4 between them, ids and forward order."""
    tensors, order = [], 0
    for i, layer in enumerate(LAYERS):
        for param, shape in (("weight", [32, 32]), ("bias", [32])):
            tensors.append(dict(id=len(tensors) + 1, name=f"{layer}.{param}", layer=layer, param=param, role="param",
                                module_type="Linear", shape=shape, numel=int(np.prod(shape)), ord=order, trainable=True))
        order += 1
        if i < 4:
            name = f"net.act{i + 1}"
            tensors.append(dict(id=len(tensors) + 1, name=name, layer=name, param="", role="output",
                                module_type=activation, shape=[16, 32], numel=512, ord=order, trainable=False))
            order += 1
    return tensors


def stats(norm, update_ratio=math.nan, saturated=math.nan, dead=math.nan, nan_count=0) -> tuple:
    values = dict(norm=norm, mean=0.0, std=norm / 10, min=-norm, max=norm, nan_count=nan_count, inf_count=0,
                  zero_frac=0.0, update_ratio=update_ratio, saturated_frac=saturated, dead_frac=dead)
    return tuple(values[f] for f in STAT_FIELDS)


def layer_rows(tensors, step, grad_scale, nan_from_layer=None):
    """Records of one logged step: grads decaying by `grad_scale` per layer towards the input."""
    rows = []
    for t in tensors:
        if t["role"] == "param":
            depth = LAYERS.index(t["layer"])
            bad = nan_from_layer is not None and depth >= nan_from_layer
            grad = 0.05 * grad_scale ** -(4 - depth)
            rows.append((t["id"], KIND_CODES["grad"], stats(math.nan if bad else grad, nan_count=5 if bad else 0), None))
            rows.append((t["id"], KIND_CODES["weight"], stats(3.0, update_ratio=1e-3 * grad_scale ** -(4 - depth)), None))
        else:
            rows.append((t["id"], KIND_CODES["activation"], stats(1.0, saturated=0.2, dead=0.0), None))
    return rows


def write_run(run_dir: Path, *, steps=range(0, 200, 4), grad_scale=10.0, nan_at=None, layers=True,
              scalars=True, status="finished", writer=None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = writer or RunWriter(run_dir)
    tensors = tensor_table()
    if layers:
        writer.add_tensors(tensors)
    wall = 1_700_000_000.0
    for step in steps:
        broken = nan_at is not None and step >= nan_at
        if layers:
            writer.add_layer_record(LayerRecord(step, wall + step, 0.01,
                                                rows=layer_rows(tensors, step, grad_scale, 2 if broken else None)))
        if scalars:
            writer.add_scalars(step, {"train_loss": math.nan if broken else 1.0 / (1 + step / 50)}, wall + step)
    writer.set_meta_now(status=status, config={"activation": "sigmoid", "batch_size": 32, "lr": 0.1},
                        started=wall)
    writer.flush()
    writer.close()
    return run_dir


# ---- diagnose_run ------------------------------------------------------------------------------
def test_diagnose_run_on_a_vanishing_gradient_run(tmp_path):
    run = write_run(tmp_path / "sigmoid-deep")
    result = diagnose_run(run)
    assert result["run"] == "sigmoid-deep" and result["status"] == "finished"
    json.dumps(result, allow_nan=False)
    vanishing = [f for f in result["flags"] if f["rule"] == "vanishing_gradient"]
    assert len(vanishing) == 1
    assert vanishing[0]["layers"][0] == "net.fc1" and vanishing[0]["first_step"] == 0
    assert vanishing[0]["remedy_ids"][0] == "relu" and vanishing[0]["remedies"]
    assert "vanishing_gradient" in result["checked"]
    assert result["note"] is None


def test_diagnose_run_healthy_relu_like_run_has_no_serious_flags(tmp_path):
    result = diagnose_run(write_run(tmp_path / "healthy", grad_scale=1.3))
    assert [f for f in result["flags"] if f["severity"] != "info"] == []


def test_diagnose_run_finds_nan_at_step_37_in_layer_3(tmp_path):
    result = diagnose_run(write_run(tmp_path / "nan-run", steps=range(60), nan_at=37))
    flag = result["flags"][0]
    assert flag["rule"] == "nonfinite" and flag["severity"] == "critical"
    assert flag["first_step"] == 37 and flag["layers"][0] == "net.fc3"


def test_format_report_reads_well(tmp_path):
    result = diagnose_run(write_run(tmp_path / "sigmoid-deep"))
    text = format_report(result)
    assert text.startswith("Run sigmoid-deep (finished):")
    assert "[WARNING] vanishing_gradient at steps 0-196 - net.fc1" in text
    assert "Try:" in text and "ReLU" in text
    empty = format_report({"run": "x", "status": "running", "flags": [], "note": "nothing yet"})
    assert "no findings" in empty and "Note: nothing yet" in empty


# ---- bad and partial inputs --------------------------------------------------------------------
def test_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(DiagnosisError, match="not a gradwatch run folder"):
        diagnose_run(tmp_path)
    with pytest.raises(DiagnosisError, match="not a run folder"):
        diagnose_run(tmp_path / "missing")
    assert issubclass(DiagnosisError, RunLogError)


def test_corrupt_database(tmp_path):
    run = tmp_path / "corrupt"
    run.mkdir()
    (run / "run.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DiagnosisError, match="corrupt"):
        diagnose_run(run)


def test_run_without_records_yet_gives_a_note_not_an_error(tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    writer = RunWriter(run)
    writer.set_meta_now(status="running", config={})
    writer.close()
    result = diagnose_run(run)
    assert result["flags"] == [] and "no records yet" in result["note"]
    assert "no records yet" in format_report(result)


def test_run_with_only_scalars_runs_the_scalar_rules(tmp_path):
    run = write_run(tmp_path / "scalars-only", steps=range(60), nan_at=37, layers=False)
    result = diagnose_run(run)
    assert [f["rule"] for f in result["flags"]] == ["nonfinite"]
    assert result["flags"][0]["first_step"] == 37 and result["flags"][0]["layers"] == []
    assert "vanishing_gradient" in result["skipped"] and "nonfinite" in result["checked"]
    assert "no per-layer statistics" in result["note"]


# ---- live ----------------------------------------------------------------------------------------
def test_live_diagnoser_reports_each_finding_once(tmp_path):
    run = tmp_path / "live"
    run.mkdir()
    writer = RunWriter(run)
    writer.set_meta_now(status="running", config={"activation": "sigmoid"})
    tensors = tensor_table()
    writer.add_tensors(tensors)
    live = LiveDiagnoser()
    raised = []
    with RunReader(run) as reader:
        for step in range(0, 120, 2):
            writer.add_layer_record(LayerRecord(step, 1.0 * step, 0.01, rows=layer_rows(tensors, step, 10.0)))
            writer.add_scalars(step, {"train_loss": 1.0 / (1 + step / 50)}, 1.0 * step)
            if step % 20 == 18:
                writer.flush()
                raised += [(step, f.rule) for f in live.check(reader)]
        writer.close()
        assert live.last_error is None
        assert [rule for _, rule in raised].count("vanishing_gradient") == 1
        post_hoc = {f.key for f in diagnose(RunData.from_reader(reader))}
    assert post_hoc <= {f.key for f in live.raised}


def test_live_diagnoser_never_raises(recwarn):
    class BrokenReader:
        meta, run_id = {}, "broken"

        def scalars(self, after_seq=0):
            raise OSError("disk went away")

    live = LiveDiagnoser()
    assert live.check(BrokenReader()) == []
    assert live.check(BrokenReader()) == []
    assert "disk went away" in live.last_error
    assert len([w for w in recwarn if "live diagnosis failed" in str(w.message)]) == 1


def test_live_reraises_when_a_finding_spreads_or_worsens():
    from gradwatch.trainer.diagnose import Flag

    live = LiveDiagnoser(rules=[])
    first = Flag("vanishing_gradient", "warning", ["a"], 0, 10, {}, "x")
    assert live._new_flags([first]) == [first]
    assert live._new_flags([Flag("vanishing_gradient", "warning", ["a"], 0, 20, {}, "x")]) == []
    wider = Flag("vanishing_gradient", "warning", ["a", "b"], 0, 30, {}, "x")
    assert live._new_flags([wider]) == [wider]
    worse = Flag("vanishing_gradient", "critical", ["a"], 0, 30, {}, "x")
    assert live._new_flags([worse]) == [worse]


# ---- speed -------------------------------------------------------------------------------------
def big_run(n_steps=3000, n_layers=20) -> RunData:
    """3000 logged steps x 20 Linear layers (weight+bias: grad and weight rows) + 19 activations."""
    steps = np.arange(n_steps) * 10
    layers = [f"model.block{i}.fc" for i in range(n_layers)]
    acts = [f"model.block{i}.act" for i in range(n_layers - 1)]
    frames = []
    rng = np.random.default_rng(0)
    for kind in ("grad", "weight"):
        for param in ("weight", "bias"):
            layer = np.tile(layers, n_steps)
            frames.append(pd.DataFrame({
                "step": np.repeat(steps, n_layers), "layer": layer, "param": param, "kind": kind,
                "norm": np.exp(rng.normal(-3, 0.3, n_steps * n_layers)),
                "update_ratio": 1e-3 if kind == "weight" else np.nan, "nan_count": 0, "inf_count": 0,
            }))
    frames.append(pd.DataFrame({
        "step": np.repeat(steps, len(acts)), "layer": np.tile(acts, n_steps), "param": "", "kind": "activation",
        "norm": 1.0, "saturated_frac": np.nan, "dead_frac": rng.uniform(0, 0.1, n_steps * len(acts)),
        "nan_count": 0, "inf_count": 0,
    }))
    stats = pd.concat(frames, ignore_index=True).sort_values("step", kind="stable")
    tensors = pd.DataFrame(
        [dict(layer=layer, param=p, role="param", module_type="Linear", shape=[64, 64] if p == "weight" else [64], ord=2 * i)
         for i, layer in enumerate(layers) for p in ("weight", "bias")]
        + [dict(layer=a, param="", role="output", module_type="ReLU", shape=[32, 64], ord=2 * i + 1) for i, a in enumerate(acts)]
    )
    loss_steps = np.arange(n_steps * 10)
    scalars = pd.DataFrame({"step": loss_steps, "name": "train_loss", "value": 2.0 / (1 + loss_steps / 3000)})
    return RunData.from_frames(scalars, stats, tensors, {"config": {"activation": "relu"}}, "big")


def best_of(n, fn):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_rules_are_fast_enough_for_live_use(capsys, monkeypatch):
    """The live path reads the derived step x layer tables and never the raw rows again: a count, not a
    time, is asserted (the times are printed: a shared machine's clock proves nothing)."""
    data = big_run()
    assert len(data.stats) > 250_000
    rules_only = best_of(3, lambda: diagnose(data))
    rebuild = best_of(1, lambda: diagnose(RunData.from_frames(data.scalars, data.stats, data.tensors, data.meta)))
    with capsys.disabled():
        print(f"\n[diagnose speed] 3000 logged steps x 20 layers ({len(data.stats)} rows): rules {rules_only * 1e3:.0f} ms,"
              f" rules + deriving layer tables from raw rows {rebuild * 1e3:.0f} ms")
    derived = []
    original = LayerViews.from_stats.__func__
    monkeypatch.setattr(LayerViews, "from_stats", classmethod(lambda cls, *a, **k: derived.append(1) or original(cls, *a, **k)))
    assert diagnose(data) == []
    assert derived == []  # the rules ran on the tables derived once, as the live diagnoser does


# ---- torch-free --------------------------------------------------------------------------------
def test_importing_diagnose_does_not_import_torch():
    code = "import gradwatch.trainer.diagnose, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
