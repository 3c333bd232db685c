"""Every floating dtype users train in is recorded exactly (float16, bfloat16, float32, float64),
on the CPU host path and on the flat-buffer path a GPU runs (forced here on the CPU); what cannot be
measured (complex, integer, meta-device parameters) is refused at `watch` with one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _train(tmp_path, dtype, *, host_checks, steps=3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    with Run(tmp_path, name=f"dtype-{str(dtype).split('.')[-1]}") as run:
        probe = run.watch(model, every=1)
        if host_checks is not None:
            probe._measurer.host_checks = host_checks
        for step in range(steps):
            x, y = torch.randn(4, 8, dtype=dtype), torch.randint(0, 3, (4,))
            loss = nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            seen.append({n: p.grad.detach().double().clone() for n, p in model.named_parameters()})
            opt.step()
            run.log(step, train_loss=loss.item())
    with RunReader(run.path) as reader:
        status = reader.status()
        grads, _ = reader.layer_stats(kinds=("grad",))
        norms = reader.step_norms()
    return status, grads, norms, seen


@pytest.mark.parametrize("host_checks", [None, False], ids=["host-path", "flat-buffer-path"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_every_floating_dtype_is_recorded_exactly(tmp_path, dtype, host_checks):
    status, grads, norms, seen = _train(tmp_path, dtype, host_checks=host_checks)
    assert status == "finished"
    rows = {(r["step"], r["name"]): r for r in grads.to_dict("records")}
    assert len(rows) == 3 * 4
    for step, by_name in enumerate(seen):
        for name, g in by_name.items():
            row = rows[(step, name)]
            assert row["norm"] == pytest.approx(torch.linalg.vector_norm(g).item(), rel=1e-5), name
            # A mean near zero is measured to a small part of the spread (half precision rounds
            # each shifted value to 11 bits).
            assert row["mean"] == pytest.approx(g.mean().item(), rel=1e-4, abs=1e-3 * g.std().item()), name
            assert row["min"] == pytest.approx(g.min().item(), rel=1e-6), name
            assert row["max"] == pytest.approx(g.max().item(), rel=1e-6), name
    # Every step's per-parameter gradient norm too, in the parameter's own precision.
    exact = norms.exact()
    assert exact.steps.tolist() == [0, 1, 2]
    for step, by_name in enumerate(seen):
        for j, name in enumerate(exact.names):
            assert exact.norm_max[step, j] == pytest.approx(torch.linalg.vector_norm(by_name[name]).item(), rel=1e-5)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(4, 2).to(torch.complex64), "complex"),
    (lambda: nn.Linear(4, 2, device="meta"), "meta"),
])
def test_unmeasurable_parameters_are_refused_in_one_line(tmp_path, make, message):
    with Run(tmp_path, name="refused") as run, pytest.raises(ValueError) as info:
        run.watch(make())
    text = str(info.value)
    assert message in text and "\n" not in text
    assert "weight" in text  # names the parameter


def test_integer_parameters_are_left_out_not_fatal(tmp_path):
    """An integer/bool parameter (a frozen lookup table registered as a Parameter) takes no gradient:
    it is left out of the watched set with a warning, and the float parameters are recorded."""
    model = nn.Linear(4, 2)
    model.register_parameter("codes", nn.Parameter(torch.arange(4), requires_grad=False))
    opt = torch.optim.SGD([model.weight, model.bias], lr=0.1)
    with Run(tmp_path, name="int") as run:
        with pytest.warns(UserWarning, match="codes"):
            run.watch(model, every=1)
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
    with RunReader(run.path) as reader:
        names = set(reader.layer_stats(kinds=("grad",))[0]["name"])
    assert names == {"weight", "bias"} or names == {"Linear.weight", "Linear.bias"}
