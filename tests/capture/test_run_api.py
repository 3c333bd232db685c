"""The Run API: bad input fails clearly and leaves nothing behind, statuses follow how the run
exits, run.log validates, and a slow disk never stalls training."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
import torch.optim.optimizer as optim_hooks
from torch import nn

from gradwatch.testing import stat_row
from gradwatch.trainer.capture import hooks as gw_hooks
from gradwatch.trainer.run import Run, RunSetupError
from gradwatch.trainer.runlog import RunReader, list_runs, resolve_run_dir, schema
from gradwatch.trainer.runlog import writer as writer_mod
from gradwatch.trainer.runlog.schema import OPTIMIZER_LR
from gradwatch.trainer.runlog.writer import LayerRecord, RunWriter


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def train_steps(model, opt, steps, run=None):
    for step in range(steps):
        opt.zero_grad()
        loss = model(torch.randn(3, 4)).pow(2).mean()
        loss.backward()
        opt.step()
        if run is not None:
            run.log(step, train_loss=loss.item())


def all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()) + gw_hooks.attached(model)


def only_run(logdir):
    runs = list(logdir.iterdir())
    assert len(runs) == 1, runs
    return runs[0]


# ---- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "every, words",
    [(0, "every"), (-3, "every"), (True, "every"), (1.5, "every"), ("10", "every")],
)
def test_watch_rejects_bad_every_without_hooking_anything(tmp_path, every, words):
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pre, post = len(optim_hooks._global_optimizer_pre_hooks), len(optim_hooks._global_optimizer_post_hooks)
    with Run(tmp_path, name="bad-every") as run:
        with pytest.raises(RunSetupError, match=words) as info:
            run.watch(model, every=every)
        assert repr(every) in str(info.value)
        assert all_hooks(model) == 0
        assert len(optim_hooks._global_optimizer_pre_hooks) == pre
        assert len(optim_hooks._global_optimizer_post_hooks) == post
        assert run.probe is None
        train_steps(model, opt, 3, run)
    with RunReader(run.path) as reader:
        assert reader.steps()[0].empty  # no optimizer hook fired
        assert reader.tensors().empty
        assert len(reader.scalars()[0]) == 3
        assert reader.status() == "finished"


@pytest.mark.parametrize("thing", ["model", None, [nn.Linear(2, 2)], nn.Linear])
def test_watch_rejects_non_modules(tmp_path, thing):
    with Run(tmp_path, name="not-a-module") as run:
        with pytest.raises(RunSetupError, match=r"nn\.Module"):
            run.watch(thing)
        # The run is still usable: a real model can be watched afterwards.
        model = small_model()
        run.watch(model, every=1)
        train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), 1)
    with RunReader(run.path) as reader:
        assert reader.steps()[0]["step"].tolist() == [0]


def test_watch_of_parameterless_module_fails_without_hooks(tmp_path):
    model = nn.Sequential(nn.ReLU(), nn.Tanh())
    pre = len(optim_hooks._global_optimizer_pre_hooks)
    with Run(tmp_path, name="noparams") as run:
        with pytest.raises(ValueError, match="no parameters"):
            run.watch(model)
    assert all_hooks(model) == 0
    assert len(optim_hooks._global_optimizer_pre_hooks) == pre


def test_second_watch_is_refused_and_first_keeps_recording(tmp_path):
    model, other = small_model(), small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Run(tmp_path, name="twice") as run:
        run.watch(model, every=1)
        with pytest.raises(RunSetupError, match="already watches"):
            run.watch(other)
        assert all_hooks(other) == 0
        train_steps(model, opt, 2)
    with RunReader(run.path) as reader:
        assert reader.steps()[0]["step"].tolist() == [0, 1]


def test_finish_removes_every_hook(tmp_path):
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pre = len(optim_hooks._global_optimizer_pre_hooks)
    with Run(tmp_path, name="cleanup") as run:
        run.watch(model, every=1)
        assert all_hooks(model) > 0
        train_steps(model, opt, 2)
    assert all_hooks(model) == 0
    assert len(optim_hooks._global_optimizer_pre_hooks) == pre
    train_steps(model, opt, 2)  # training on after the run does not write to the closed run
    with RunReader(run.path) as reader:
        assert reader.steps()[0]["step"].tolist() == [0, 1]


def test_logdir_below_a_regular_file_is_refused_and_nothing_created(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(RunSetupError, match="cannot create logdir") as info:
        Run(blocker / "logs", name="x")
    assert "file.txt" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    assert blocker.read_text() == "not a folder"


def test_logdir_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(RunSetupError, match="not a directory"):
        Run(blocker, name="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.parametrize("name", ["a/b", "../escape", "..", "", ".hidden", "with space", "x" * 65, "a\\b", "a..b", "exp\n"])
def test_bad_run_names_are_refused_before_anything_is_created(tmp_path, name):
    logdir = tmp_path / "logs"
    with pytest.raises(RunSetupError, match="invalid run name"):
        Run(logdir, name=name)
    assert not logdir.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["v1.2", "a_b-c", "x" * 64, "a.", "7"])
def test_every_accepted_run_name_gives_a_run_id_readers_accept(tmp_path, name):
    with Run(tmp_path, name=name) as run:
        run.log(0, x=1.0)
    assert resolve_run_dir(tmp_path, run.id) == run.path.resolve()
    (entry,) = list_runs(tmp_path)
    assert entry.error is None and entry.status == "finished"


def test_bad_config_is_refused_before_anything_is_created(tmp_path):
    logdir = tmp_path / "logs"
    with pytest.raises(RunSetupError, match="config must be a dict"):
        Run(logdir, name="cfg", config=["lr", 0.1])
    assert not logdir.exists()


# ---- status -------------------------------------------------------------------------------------
def read_meta(path):
    with RunReader(path) as reader:
        return reader.meta, reader.status()


def test_context_manager_marks_finished(tmp_path):
    with Run(tmp_path, name="ok", config={"lr": 0.1}) as run:
        meta, status = read_meta(run.path)
        assert status == "running" and meta["status"] == "running"
        run.log(0, train_loss=1.0)
    meta, status = read_meta(run.path)
    assert status == "finished" and meta["error"] is None
    assert meta["ended"] >= meta["started"]
    assert meta["config"] == {"lr": 0.1}


def test_context_manager_marks_failed_with_exception_text(tmp_path):
    with pytest.raises(RuntimeError, match="loss exploded"):
        with Run(tmp_path, name="boom") as run:
            run.log(0, train_loss=1.0)
            raise RuntimeError("loss exploded at step 7")
    meta, status = read_meta(run.path)
    assert status == "failed"
    assert "RuntimeError: loss exploded at step 7" in meta["error"]
    with RunReader(run.path) as reader:
        assert len(reader.scalars()[0]) == 1  # what was logged before the failure is kept


def test_context_manager_marks_stopped_on_keyboard_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with Run(tmp_path, name="ctrl-c") as run:
            raise KeyboardInterrupt
    meta, status = read_meta(run.path)
    assert status == "stopped"
    assert "KeyboardInterrupt" in meta["error"]


@pytest.mark.parametrize(
    "step, scalars, words",
    [
        (-1, {"loss": 1.0}, "step"),
        (1.5, {"loss": 1.0}, "step"),
        ("3", {"loss": 1.0}, "step"),
        (True, {"loss": 1.0}, "step"),
        (0, {"loss": "1.0"}, "loss"),
        (0, {"acc": None}, "acc"),
        (0, {"flag": True}, "flag"),
        (0, {"pair": (1.0, 2.0)}, "pair"),
    ],
)
def test_log_validation(tmp_path, step, scalars, words):
    with Run(tmp_path, name="log") as run:
        with pytest.raises(ValueError, match=words):
            run.log(step, **scalars)
    with RunReader(run.path) as reader:
        assert reader.scalars()[0].empty


def test_nonfinite_and_tensor_scalars_read_back(tmp_path):
    with Run(tmp_path, name="nan") as run:
        run.log(0, loss=float("nan"), up=float("inf"), down=float("-inf"))
        run.log(1, loss=torch.tensor(0.25), n=3)
    with RunReader(run.path) as reader:
        df, _ = reader.scalars()
    values = {(r["step"], r["name"]): r["value"] for r in df.to_dict("records")}
    assert math.isnan(values[(0, "loss")])
    assert values[(0, "up")] == math.inf and values[(0, "down")] == -math.inf
    assert values[(1, "loss")] == 0.25 and values[(1, "n")] == 3.0
    assert len(values) == 5


def test_log_after_finish_raises_instead_of_losing_the_value(tmp_path):
    with Run(tmp_path, name="late") as run:
        run.log(0, train_loss=1.0)
    with pytest.raises((RuntimeError, ValueError)):
        run.log(1, train_loss=0.5)  # the writer is closed: the value would vanish silently
    with RunReader(run.path) as reader:
        assert reader.scalars()[0]["step"].tolist() == [0]


# ---- back-pressure ------------------------------------------------------------------------------
def stall_layer_writes(monkeypatch, release: threading.Event):
    """Make the writer's 'disk' hang on layer records until `release` is set."""
    original = RunWriter._write_layer_record

    def slow(self, conn, record):
        release.wait(20)
        return original(self, conn, record)

    monkeypatch.setattr(RunWriter, "_write_layer_record", slow)


def test_slow_disk_drops_histograms_keeps_scalars_and_never_blocks_training(tmp_path, monkeypatch):
    release = threading.Event()
    stall_layer_writes(monkeypatch, release)
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    n_steps = 150
    slowest = 0.0
    try:
        with Run(tmp_path, name="slow-disk") as run:
            run.watch(model, every=1)
            for step in range(n_steps):
                t0 = time.perf_counter()
                opt.zero_grad()
                loss = model(torch.randn(3, 4)).pow(2).mean()
                loss.backward()
                opt.step()
                run.log(step, train_loss=loss.item())
                slowest = max(slowest, time.perf_counter() - t0)
            release.set()
    finally:
        release.set()
    assert slowest < 1.0, f"a training step waited {slowest:.2f}s on the stalled writer"
    with RunReader(run.path) as reader:
        dropped = reader.meta["dropped_histograms"]
        scalars, _ = reader.scalars()
        scalars = scalars[scalars["name"] != OPTIMIZER_LR]  # the capture's own lr records
        steps, _ = reader.steps()
        stats, _ = reader.layer_stats(kinds=("grad", "weight"))
        kept = {name: reader.histograms(name, "grad")[0].tolist() for name in ("0.weight", "2.bias")}
        assert reader.meta["dropped_records"] == 0
    assert scalars[scalars["name"] == "train_loss"]["step"].tolist() == list(range(n_steps))
    assert scalars[scalars["name"] == schema.SENTINEL_GRAD_NORM]["step"].tolist() == list(range(n_steps))
    assert steps["step"].tolist() == list(range(n_steps))  # statistics of every step kept
    assert dropped > 0
    assert len(stats) == n_steps * 8 and stats["norm"].notna().all()
    # Histograms of the first records were written; the dropped ones are exactly the counted ones.
    assert kept["0.weight"][:10] == list(range(10))
    assert len(kept["0.weight"]) < n_steps
    assert dropped == 8 * n_steps - 4 * sum(len(v) for v in kept.values())


def test_writer_hard_limit_drops_records_but_keeps_scalars(tmp_path, monkeypatch):
    release = threading.Event()
    stall_layer_writes(monkeypatch, release)
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    writer = RunWriter(run_dir, max_pending_records=2, flush_interval_s=0.05)
    writer.set_meta_now(status="running", started=time.time())
    writer.add_tensors([dict(id=1, name="w", layer="l", param="weight", role="param", module_type="Linear",
                             shape=[3], numel=3, ord=0, trainable=True)])
    hist = [0] * 129
    hist[70] = 3
    stats = stat_row(norm=1.0, mean=0.5, std=0.1, min=0.0, max=1.0, nan_count=0, inf_count=0, zero_frac=0.0)
    slowest = 0.0
    n = 100
    try:
        for step in range(n):
            t0 = time.perf_counter()
            writer.add_layer_record(LayerRecord(step, time.time(), None, rows=[(1, 1, stats, hist)]))
            writer.add_scalars(step, {"loss": float(step)}, time.time())
            slowest = max(slowest, time.perf_counter() - t0)
    finally:
        release.set()
    writer.set_meta_now(status="finished")
    writer.close()
    assert slowest < 0.5
    limit = 2 * writer_mod.HARD_PENDING_FACTOR
    with RunReader(run_dir) as reader:
        assert reader.meta["dropped_records"] == n - limit
        assert reader.meta["dropped_histograms"] == limit - 2
        assert reader.steps()[0]["step"].tolist() == list(range(limit))
        assert reader.histograms("w", "weight")[0].tolist() == [0, 1]
        assert reader.scalars()[0]["value"].tolist() == [float(s) for s in range(n)]
