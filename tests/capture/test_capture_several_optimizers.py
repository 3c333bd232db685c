"""Several optimizers with separate backward passes (a GAN: the discriminator's loss, backward and
step, then the generator's): each optimizer's step records the gradients of the parameters it owns
as it steps with them, not the stale ones left by the other backward pass; the weights are
recorded after both updates. Checked against norms taken by hand just before each step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader

# Value-checked on the host path and on the accelerator path a GPU runs (conftest.py).
pytestmark = pytest.mark.usefixtures("capture_path")

STEPS = 4


class GAN(nn.Module):
    """Generator and discriminator in one module; forward scores generated samples."""

    def __init__(self):
        super().__init__()
        self.G = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6))
        self.D = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, z):
        return self.D(self.G(z))


def norms(module, prefix):
    return {f"{prefix}.{n}": p.grad.double().norm().item() for n, p in module.named_parameters() if p.grad is not None}


def train(tmp_path, *, detach: bool, call_root: bool):
    """detach=False lets the discriminator's loss flow into the generator (its gradients exist at
    the discriminator's step and are not the ones the generator steps with); call_root runs the
    watched module's own forward between the two steps."""
    torch.manual_seed(0)
    gan = GAN()
    opt_d = torch.optim.Adam(gan.D.parameters(), lr=1e-2)
    opt_g = torch.optim.SGD(gan.G.parameters(), lr=0.1)
    bce = nn.functional.binary_cross_entropy_with_logits
    g = torch.Generator().manual_seed(1)
    expected, weights = [], []
    with Run(tmp_path, name="gan") as run:
        run.watch(gan, every=1)
        for _ in range(STEPS):
            real, z = torch.randn(8, 6, generator=g), torch.randn(8, 4, generator=g)
            fake = gan.G(z)
            opt_d.zero_grad()
            scores = gan.D(torch.cat([real, fake.detach() if detach else fake]))
            loss_d = bce(scores, torch.cat([torch.ones(8, 1), torch.zeros(8, 1)]))
            loss_d.backward()
            at_step = norms(gan.D, "D")
            opt_d.step()
            opt_g.zero_grad()
            loss_g = bce(gan(z) if call_root else gan.D(fake), torch.ones(8, 1))
            loss_g.backward()
            at_step.update(norms(gan.G, "G"))
            opt_g.step()
            expected.append(at_step)
            weights.append({f"{n}": p.detach().double().norm().item() for n, p in gan.named_parameters()})
        path = run.path
    with RunReader(path) as reader:
        recorded, _ = reader.layer_stats(kinds=("grad", "weight"))
    return recorded, expected, weights


@pytest.mark.parametrize("detach,call_root", [(True, False), (False, True)])
def test_each_optimizer_records_the_gradients_it_steps_with(tmp_path, detach, call_root):
    recorded, expected, weights = train(tmp_path, detach=detach, call_root=call_root)
    grads = recorded[recorded["kind"] == "grad"]
    assert sorted(grads["step"].unique()) == list(range(STEPS))
    for step in range(STEPS):
        got = {r["name"]: r["norm"] for r in grads[grads["step"] == step].to_dict("records")}
        assert set(got) == set(expected[step]) == {f"{m}.{i}.{k}" for m in "GD" for i in (0, 2)
                                                   for k in ("weight", "bias")}
        for name, value in expected[step].items():
            assert got[name] == pytest.approx(value, rel=1e-6), (step, name)
    for row in recorded[recorded["kind"] == "weight"].to_dict("records"):
        assert row["norm"] == pytest.approx(weights[row["step"]][row["name"]], rel=1e-6)


def test_the_generator_gradients_differ_from_the_stale_ones(tmp_path):
    """The check above can fail: at the discriminator's step the generator holds other gradients."""
    recorded, expected, _ = train(tmp_path, detach=False, call_root=True)
    torch.manual_seed(0)
    gan = GAN()
    g = torch.Generator().manual_seed(1)
    real, z = torch.randn(8, 6, generator=g), torch.randn(8, 4, generator=g)
    scores = gan.D(torch.cat([real, gan.G(z)]))
    nn.functional.binary_cross_entropy_with_logits(scores, torch.cat([torch.ones(8, 1), torch.zeros(8, 1)])).backward()
    stale = norms(gan.G, "G")["G.0.weight"]
    got = recorded[(recorded["kind"] == "grad") & (recorded["step"] == 0) & (recorded["name"] == "G.0.weight")]
    assert got["norm"].item() == pytest.approx(expected[0]["G.0.weight"], rel=1e-6)
    assert abs(stale - expected[0]["G.0.weight"]) > 1e-3 * expected[0]["G.0.weight"]


def test_ownership_of_tensors_holding_several_parameters():
    """An FSDP1 flat parameter holds several watched parameters: the optimizer stepping it owns
    them all, so the record does not wait for another optimizer."""
    from types import SimpleNamespace

    from gradwatch.trainer.capture.optimizers import Ownership

    flat, head = torch.zeros(3), torch.zeros(2)
    ownership = Ownership([id(flat), id(flat), id(head)], [True, True, True])
    only_flat = SimpleNamespace(param_groups=[{"params": [flat]}])
    ownership.counting(only_flat)
    assert ownership.owned(only_flat) == {0, 1}
    assert ownership.waiting  # the head is trainable and no optimizer has stepped it yet
    assert ownership.other_steps(SimpleNamespace(param_groups=[{"params": [head]}])) == {2}
    assert not ownership.waiting
    ownership.step_done()
    assert ownership.waiting and ownership.by_others == {2}
