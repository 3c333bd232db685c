"""Capture is right whatever the optimizer call pattern: step(closure) (LBFGS), a hand-written
update marked with run.step() (and a warning without it), an unwatched model; hooks never get in
the way (torch.save at every step, unwatch) and a run left open is still marked at exit."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.optim.optimizer as optim_hooks
from torch import nn

from gradwatch.trainer.capture import hooks as gw_hooks
from gradwatch.trainer.capture.probe import Probe, StepNotSeenWarning
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader

# Value-checked on the host path and on the accelerator path a GPU runs (conftest.py): every
# test here but the one that runs its script in a child process.
on_both_paths = pytest.mark.usefixtures("capture_path")


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)) for _ in range(n)]


def stats(run_path, kind):
    with RunReader(run_path) as reader:
        df, _ = reader.layer_stats(kinds=(kind,))
    return {(r["step"], r["name"]): r for r in df.to_dict("records")}


def all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) + gw_hooks.attached(model)


def assert_norms(rows, step, grads):
    for name, g in grads.items():
        assert rows[(step, name)]["norm"] == pytest.approx(g.double().norm().item(), rel=1e-5), (step, name)


@on_both_paths
@pytest.mark.parametrize("optimizer", ["lbfgs", "sgd"])
def test_step_with_closure_records_the_gradients_the_closure_computed(tmp_path, optimizer):
    model = make_model()
    opt = (torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=4) if optimizer == "lbfgs"
           else torch.optim.SGD(model.parameters(), lr=0.1))
    seen = []
    with Run(tmp_path, name="closure") as run:
        run.watch(model, every=1)
        for x, y in batches(3):
            first = []

            def closure(x=x, y=y, first=first):
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                if not first:  # LBFGS evaluates again after moving the weights: the first counts
                    first.append({n: p.grad.clone() for n, p in model.named_parameters()})
                return loss

            opt.step(closure)
            seen.append(first[0])
    grads = stats(run.path, "grad")
    assert sorted({s for s, _ in grads}) == [0, 1, 2]
    for step, reference in enumerate(seen):
        assert_norms(grads, step, reference)
    acts = stats(run.path, "activation")
    # One forward pass per step counted (not LBFGS's later evaluations): dead_frac is measured.
    assert all((s, "1") in acts for s in range(3))


@on_both_paths
def test_manual_update_with_run_step_records_every_step(tmp_path):
    model = make_model()
    seen, before = [], []
    with Run(tmp_path, name="manual") as run:
        run.watch(model, every=1)
        for x, y in batches(4):
            model.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            before.append(model[0].weight.detach().clone())
            seen.append({n: p.grad.clone() for n, p in model.named_parameters()})
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-0.1)
            run.step()
    grads, weights = stats(run.path, "grad"), stats(run.path, "weight")
    assert sorted({s for s, _ in grads}) == [0, 1, 2, 3]
    for step, reference in enumerate(seen):
        assert_norms(grads, step, reference)
        w = weights[(step, "0.weight")]
        after = before[step + 1] if step + 1 < len(before) else model[0].weight.detach()
        assert w["norm"] == pytest.approx(after.norm().item(), rel=1e-5)
        expected_ratio = ((after - before[step]).norm() / after.norm()).item()
        assert w["update_ratio"] == pytest.approx(expected_ratio, rel=1e-3)
    assert all((s, "1") in stats(run.path, "activation") for s in range(4))


@on_both_paths
def test_manual_update_without_run_step_warns_once_and_detaches_forward_hooks(tmp_path):
    model = make_model()
    with Run(tmp_path, name="no-step") as run:
        run.watch(model, every=1)
        hooked = all_hooks(model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for x, y in batches(3 * Probe.STEPLESS_FORWARDS):
                model.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(p.grad, alpha=-0.01)
        found = [w for w in caught if issubclass(w.category, StepNotSeenWarning)]
        assert len(found) == 1
        assert "run.step()" in str(found[0].message)
        assert hooked > 0 and all_hooks(model) == 0  # nothing left on the forward path
    with RunReader(run.path) as reader:
        assert reader.steps()[0].empty


@on_both_paths
def saved_and_loaded_with_weights_only(model):
    """The model torch.save()d whole and loaded back with torch.load's default since torch 2.6
    (weights_only=True), which refuses any class it was not told of: the user allows their model's
    classes, and nothing of gradwatch is in the pickle."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    assert b"gradwatch" not in buffer.getvalue()
    buffer.seek(0)
    with torch.serialization.safe_globals([nn.Sequential, nn.Linear, nn.ReLU]):
        loaded = torch.load(buffer)
    assert all_hooks(loaded) == 0
    return loaded


def test_a_watched_model_saves_at_every_point_of_a_step(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def save_and_load():
        copy_ = saved_and_loaded_with_weights_only(model)
        copy_(torch.randn(2, 6))
        twin = copy.deepcopy(model)
        assert all_hooks(twin) == 0
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)

    with Run(tmp_path, name="save") as run:
        run.watch(model, every=2)
        save_and_load()
        for x, y in batches(5):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            save_and_load()
            loss.backward()
            opt.step()
            save_and_load()  # a record waits for the next forward pass: its hook is attached
    assert sorted({s for s, _ in stats(run.path, "grad")}) == [0, 2, 4]


@on_both_paths
def test_unwatch_removes_every_hook_and_keeps_the_run_open(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pre, post = len(optim_hooks._global_optimizer_pre_hooks), len(optim_hooks._global_optimizer_post_hooks)
    with Run(tmp_path, name="unwatch") as run:
        run.watch(model, every=1)
        for x, y in batches(2):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        run.unwatch()
        assert all_hooks(model) == 0
        assert len(optim_hooks._global_optimizer_pre_hooks) == pre
        assert len(optim_hooks._global_optimizer_post_hooks) == post
        opt.step()
        run.log(5, train_loss=1.0)
        run.watch(model, every=1)  # another watch is allowed after unwatch
    assert sorted({s for s, _ in stats(run.path, "grad")}) == [0, 1]


@pytest.mark.slow  # a child Python process per case
@pytest.mark.parametrize("ending, status, error", [
    ("pass", "finished", None),
    ("raise ValueError('bad batch 7')", "failed", "ValueError: bad batch 7"),
    ("raise KeyboardInterrupt", "stopped", "KeyboardInterrupt"),
])
def test_a_run_without_with_is_flushed_and_marked_at_exit(tmp_path, ending, status, error):
    script = textwrap.dedent(f"""
        import sys, torch
        from torch import nn
        from gradwatch import Run
        def hook(*a):
            print("user hook ran", file=sys.stderr)
        sys.excepthook = hook
        run = Run({str(tmp_path)!r}, name="open", flush_interval_s=60)
        model = nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        run.watch(model, every=1)
        for step in range(3):
            opt.zero_grad(); model(torch.randn(4, 3)).sum().backward(); opt.step()
            run.log(step, train_loss=float(step))
        {ending}
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode == 0) == (status == "finished"), done.stderr
    if status != "finished":
        assert "user hook ran" in done.stderr  # the user's excepthook still runs
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    with RunReader(folder) as reader:
        assert reader.status() == status
        assert (reader.meta.get("error") or None) is None if error is None else error in reader.meta["error"]
        assert reader.scalar_series("train_loss")["value"].tolist() == [0.0, 1.0, 2.0]
        assert reader.logged_steps().tolist() == [0, 1, 2]


@on_both_paths
def test_two_optimizers_one_record_per_step_with_both_parts(tmp_path):
    model = make_model()
    first = torch.optim.SGD(model[0].parameters(), lr=0.1)
    second = torch.optim.Adam(model[2].parameters(), lr=0.01)
    seen, after = [], []
    with Run(tmp_path, name="two-optimizers") as run:
        run.watch(model, every=1)
        for x, y in batches(3):
            first.zero_grad()
            second.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            seen.append({n: p.grad.clone() for n, p in model.named_parameters()})
            first.step()
            second.step()
            after.append(model[2].weight.detach().clone())
    grads, weights = stats(run.path, "grad"), stats(run.path, "weight")
    assert sorted({s for s, _ in grads}) == [0, 1, 2]
    for step, reference in enumerate(seen):
        assert_norms(grads, step, reference)
        # The record waits for the second optimizer: its update is in the recorded weights.
        assert weights[(step, "2.weight")]["norm"] == pytest.approx(after[step].norm().item(), rel=1e-6)


def test_a_hand_updated_model_saves_and_loads_with_weights_only_at_logged_and_unlogged_steps(tmp_path):
    """run.step() loops too: the watched model, saved whole before and after logged and unlogged
    steps, loads with torch.load's default weights_only=True once its own classes are allowed."""
    model = make_model()

    def save_and_load():
        loaded = saved_and_loaded_with_weights_only(model)
        assert torch.equal(loaded[0].weight, model[0].weight)

    with Run(tmp_path, name="by-hand") as run:
        run.watch(model, every=2)
        for x, y in batches(5):
            model.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            save_and_load()  # gradients taken, activation hooks of a logged step attached
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-0.1)
            run.step()
            save_and_load()
    assert sorted({s for s, _ in stats(run.path, "grad")}) == [0, 2, 4]
