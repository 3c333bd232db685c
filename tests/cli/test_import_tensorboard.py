"""`gradwatch import-tensorboard`: a run recorded with torch's SummaryWriter (scalars, add_histogram
of weights and gradients) becomes a run folder whose statistics equal the tensors' own, under
gradwatch's names and layer order, and the imported run is diagnosed. Bad input: one line, exit 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from gradwatch.cli import main
from gradwatch.trainer.diagnose import diagnose_run
from gradwatch.trainer.runlog import RunReader, schema

STEPS = 6


def record_tensorboard(tb_dir):
    """A deep sigmoid network with small weights (its gradients vanish), logged the usual way."""
    torch.manual_seed(0)
    layers = []
    for _ in range(6):
        linear = nn.Linear(32, 32)
        nn.init.normal_(linear.weight, std=0.05)
        layers += [linear, nn.Sigmoid()]
    model = nn.Sequential(nn.Linear(8, 32), nn.Sigmoid(), *layers, nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    writer = SummaryWriter(str(tb_dir))
    truth = {}
    for step in range(STEPS):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.randn(16, 8)), torch.randint(0, 2, (16,)))
        loss.backward()
        writer.add_scalar("Loss/train", loss.item(), step)
        for name, p in model.named_parameters():
            writer.add_histogram(f"{name}.grad", p.grad, step)
            writer.add_histogram(f"weights/{name}", p.detach(), step)
            truth[(step, name, "grad")] = p.grad.clone()
            truth[(step, name, "weight")] = p.detach().clone()
        opt.step()
        if step % 3 == 2:
            writer.add_scalar("Loss/val", loss.item() * 1.1, step)
    writer.close()
    return model, truth


def test_imported_run_has_the_tensors_statistics_and_is_diagnosed(tmp_path, capsys):
    model, truth = record_tensorboard(tmp_path / "tb" / "deep-sigmoid")
    assert main(["import-tensorboard", str(tmp_path / "tb"), "--logdir", str(tmp_path / "logs")]) == 0
    (printed,) = capsys.readouterr().out.split()
    with RunReader(printed) as reader:
        assert reader.status() == "finished"
        assert reader.meta["integration"] == "tensorboard"
        assert reader.meta["name"] == "deep-sigmoid"
        assert reader.scalar_series("train_loss")["step"].tolist() == list(range(STEPS))
        assert reader.scalar_series("val_loss")["step"].tolist() == [2, 5]
        names = [n for n, _ in model.named_parameters()]
        assert list(reader.tensors()["name"]) == names  # the order the tags were written
        assert reader.layer_order()[:2] == ["0", "2"]
        stats, _ = reader.layer_stats()
    assert len(stats) == STEPS * len(names) * 2
    for row in stats.to_dict("records"):
        t = truth[(row["step"], row["name"], row["kind"])].double()
        assert row["norm"] == pytest.approx(t.norm().item(), rel=1e-4)
        assert row["mean"] == pytest.approx(t.mean().item(), rel=1e-3, abs=1e-9)
        assert row["std"] == pytest.approx(t.std().item(), rel=1e-3)
        assert row["min"] == pytest.approx(t.min().item(), rel=1e-5)
        assert row["max"] == pytest.approx(t.max().item(), rel=1e-5)
    flags = {flag["rule"] for flag in diagnose_run(printed)["flags"]}
    assert "vanishing_gradient" in flags


def test_histogram_buckets_land_on_gradwatchs_bins():
    from gradwatch.trainer.tb_import import rebin

    # Contiguous TensorBoard buckets (upper limits), the first starting at the minimum:
    # [-0.011, -0.01], (-0.01, 0] (zeros), (0, 0.9] (empty), (0.9, 1.0].
    counts = rebin([-0.01, 0.0, 0.9, 1.0], [3, 5, 0, 2], -0.011, 1.0)
    def bin_of(x):  # the bin of a value's magnitude, on its side of the zero bin
        offset = 1 + int(np.floor((np.log10(abs(x)) - schema.HIST_LOG_MIN) * schema.HIST_BINS_PER_DECADE))
        return schema.HIST_ZERO_INDEX + int(np.sign(x)) * offset

    expected = np.zeros(schema.HIST_LEN, dtype=np.int64)
    expected[schema.HIST_ZERO_INDEX] = 5
    expected[bin_of(np.sqrt(0.9 * 1.0))] = 2  # the geometric centre of (0.9, 1.0]
    expected[bin_of(-np.sqrt(0.011 * 0.01))] = 3
    assert counts.tolist() == expected.tolist()


@pytest.mark.parametrize("make, words", [
    (lambda p: p / "missing", "is not a folder"),
    (lambda p: p, "no TensorBoard event files"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, make, words):
    assert main(["import-tensorboard", str(make(tmp_path)), "--logdir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("tag", ["activations/{}", "{}/output", "{}_act"])
def test_activation_histograms_are_imported_as_activation_statistics(tmp_path, capsys, tag):
    """Outputs logged from forward hooks (the usual way to histogram activations) become the
    activation statistics of their modules; the parameters' histograms stay gradients and weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    names = {model[1]: "relu1", model[3]: "tanh3"}
    writer = SummaryWriter(str(tmp_path / "tb" / "acts"))
    truth, step = {}, [0]

    def log_output(module, inputs, output):
        writer.add_histogram(tag.format(names[module]), output, step[0])
        truth[(step[0], names[module])] = output.detach().double().clone()

    for module in names:
        module.register_forward_hook(log_output)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step[0] in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(32, 8) - 0.5), torch.randint(0, 2, (32,))).backward()
        for name, p in model.named_parameters():
            writer.add_histogram(f"{name}.grad", p.grad, step[0])
            writer.add_histogram(f"weights/{name}", p.detach(), step[0])
        opt.step()
    writer.close()
    assert main(["import-tensorboard", str(tmp_path / "tb"), "--logdir", str(tmp_path / "logs")]) == 0
    (printed,) = capsys.readouterr().out.split()
    with RunReader(printed) as reader:
        tensors = reader.tensors()
        acts, _ = reader.layer_stats(kinds=("activation",))
        params, _ = reader.layer_stats(kinds=("grad", "weight"))
    outputs = tensors[tensors["role"] == "output"]
    assert sorted(outputs["name"]) == ["relu1", "tanh3"]
    assert dict(zip(outputs["name"], outputs["module_type"])) == {"relu1": "ReLU", "tanh3": "Tanh"}
    assert sorted(tensors[tensors["role"] == "param"]["name"]) == sorted(n for n, _ in model.named_parameters())
    assert len(acts) == 3 * 2 and len(params) == 3 * 6 * 2
    for row in acts.to_dict("records"):
        y = truth[(row["step"], row["layer"])]
        assert row["norm"] == pytest.approx(y.norm().item(), rel=1e-4)
        assert row["mean"] == pytest.approx(y.mean().item(), rel=1e-3)
        assert row["std"] == pytest.approx(y.std().item(), rel=1e-3)
        assert (row["min"], row["max"]) == pytest.approx((y.min().item(), y.max().item()), rel=1e-5, abs=1e-12)
        assert row["zero_frac"] == pytest.approx((y == 0).double().mean().item())
    relu_zero = acts[acts["layer"] == "relu1"]["zero_frac"]
    assert (relu_zero > 0.2).all()  # the ReLU's zeros are counted, not lost in a bucket
    # Diagnosis reads the imported activations; dead units need per-unit data TensorBoard lacks.
    report = diagnose_run(printed)
    assert "dead_units" not in {flag["rule"] for flag in report["flags"]}
