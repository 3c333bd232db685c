"""Per-tensor statistics recorded by Run.watch equal references computed directly with torch/numpy.

A small model is trained a few steps with every=1 while the test keeps its own copies of the
gradients (as the optimizer saw them), the weights before and after each step and every
activation; each recorded number is then compared with the reference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradwatch.trainer.capture import tensor_stats
from gradwatch.trainer.run import Run
from gradwatch.trainer.runlog import RunReader, schema

# Value-checked on the host path and on the accelerator path a GPU runs (conftest.py).
pytestmark = pytest.mark.usefixtures("capture_path")

EDGES = schema.hist_magnitude_edges()
BINS = schema.HIST_BINS_PER_SIGN
ZERO = schema.HIST_ZERO_INDEX


# ---- references -------------------------------------------------------------------------------
def ref_bin_index(values: np.ndarray) -> np.ndarray:
    """Storage index of each value (HIST_LEN for NaN) by searching schema's edges over log10|x|."""
    v = np.asarray(values, dtype=np.float64).ravel()
    out = np.full(v.shape, schema.HIST_LEN, dtype=np.int64)
    finite_or_inf = ~np.isnan(v)
    zero = v == 0
    out[zero] = ZERO
    rest = finite_or_inf & ~zero
    with np.errstate(divide="ignore"):
        mag = np.log10(np.abs(v[rest]))
    k = np.clip(np.searchsorted(EDGES, mag, side="right") - 1, 0, BINS - 1)
    out[rest] = np.where(v[rest] > 0, ZERO + 1 + k, ZERO - 1 - k)
    return out


def ref_hist(values: np.ndarray) -> tuple[np.ndarray, int]:
    """(counts in storage order, number of values within 1e-5 decades of an edge).

    Values that close to an edge may fall either side in float32 arithmetic; the comparison
    allows exactly that many disagreements (normally none)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    idx = ref_bin_index(v)
    counts = np.bincount(idx[idx < schema.HIST_LEN], minlength=schema.HIST_LEN)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.log10(np.abs(v[np.isfinite(v) & (v != 0)]))
    ambiguous = int((np.abs(mag[:, None] - EDGES[None, 1:-1]).min(axis=1) < 1e-5).sum()) if mag.size else 0
    return counts, ambiguous


def ref_stats(t: torch.Tensor) -> dict:
    x = t.detach().double().reshape(-1)
    n = x.numel()
    return {
        "norm": torch.linalg.vector_norm(x).item(),
        "mean": x.mean().item(),
        "std": x.std().item() if n > 1 else 0.0,
        "min": x.min().item(),
        "max": x.max().item(),
        "nan_count": int(torch.isnan(x).sum()),
        "inf_count": int(torch.isinf(x).sum()),
        "zero_frac": (x == 0).double().mean().item(),
    }


def assert_close(got, want, what, rtol=2e-4, atol=1e-7):
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), f"{what}: got {got}, want NaN"
        return
    assert got == pytest.approx(want, rel=rtol, abs=atol), f"{what}: got {got}, want {want}"


def records(run_path):
    """{(step, name, kind): row dict} of every stats row, plus the reader for histograms."""
    with RunReader(run_path) as reader:
        df, _ = reader.layer_stats()
        tensors = reader.tensors()
    out = {}
    for row in df.to_dict("records"):
        key = (row["step"], row["name"], row["kind"])
        assert key not in out, f"duplicate record {key}"
        out[key] = row
    return out, tensors


def hist_of(run_path, name, kind):
    with RunReader(run_path) as reader:
        steps, counts = reader.histograms(name, kind)
    return dict(zip(steps.tolist(), counts))


# ---- the model ----------------------------------------------------------------------------------
class Net(nn.Module):
    """Linear -> ReLU (some dead units) -> Linear -> Tanh (some saturated) -> Linear -> Sigmoid."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 12)
        self.tanh = nn.Tanh()
        self.fc3 = nn.Linear(12, 4)
        self.sigmoid = nn.Sigmoid()
        with torch.no_grad():
            self.fc1.bias[:5] = -50.0  # 5 of 16 ReLU units dead for every input
            self.fc2.weight.mul_(6.0)  # drive part of the tanh into its rails
            self.fc3.weight.mul_(8.0)  # and part of the sigmoid

    def forward(self, x):
        return self.sigmoid(self.fc3(self.tanh(self.fc2(self.relu(self.fc1(x))))))


PARAMS = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
ACTS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def train_with_reference(tmp_path, steps=3, poison_last_grad=False):
    """Train Net with every=1; return (run path, per-step reference tensors)."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    outputs = {}

    def keep(name):
        def hook(module, inputs, output):
            outputs[name] = output.detach().clone()

        return hook

    for name in ACTS:
        getattr(model, name).register_forward_hook(keep(name))
    ref = []
    with Run(tmp_path, name="stats") as run:
        run.watch(model, every=1)
        for step in range(steps):
            x = torch.randn(32, 8)
            x[:, 0] = 0.0  # fc1.weight's first column gets exactly zero gradient
            target = torch.rand(32, 4)
            opt.zero_grad()
            loss = ((model(x) - target) ** 2).mean()
            loss.backward()
            if poison_last_grad and step == steps - 1:
                g = model.fc2.weight.grad
                g[0, 0] = float("nan")
                g[0, 1] = float("inf")
                g[1, 0] = float("-inf")
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            opt.step()
            ref.append({
                "grad": {n: p.grad.detach().clone() for n, p in model.named_parameters()},
                "before": before,
                "weight": {n: p.detach().clone() for n, p in model.named_parameters()},
                "act": dict(outputs),
            })
            run.log(step, train_loss=loss.item())
    return run.path, ref


# ---- tests --------------------------------------------------------------------------------------
def test_log_magnitude_bins_of_edge_values_match_numpy_reference():
    values = [0.0, -0.0, 1e-13, 1e-9, -1e-9, 1e3, 1e5, math.inf, -math.inf, math.nan, 0.3, -2.5e-4, 7e-12]
    want = ref_bin_index(np.array(values))
    for dtype in (torch.float64, torch.float32):
        got = tensor_stats.log_magnitude_bins(torch.tensor(values, dtype=dtype)).numpy().astype(np.int64)
        np.testing.assert_array_equal(got, want, err_msg=str(dtype))
    # Spelled out: zeros of both signs on the zero bin, below-range magnitudes in the innermost
    # bin, +-inf and above-range in the outermost bins, NaN outside the histogram.
    got = dict(zip(["0", "-0", "1e-13", "1e-9", "-1e-9", "1e3", "1e5", "inf", "-inf", "nan"],
                   tensor_stats.log_magnitude_bins(torch.tensor(values[:10], dtype=torch.float64)).tolist()))
    assert got["0"] == got["-0"] == ZERO
    assert got["1e-13"] == ZERO + 1
    assert got["1e-9"] == ZERO + 1 + 12  # log10 = -9 is edge 12: (-9 - -12) * 4
    assert got["-1e-9"] == ZERO - 1 - 12
    assert got["1e3"] == ZERO + 1 + 60
    assert len({got["1e-9"], got["-1e-9"], got["1e3"], got["0"]}) == 4
    assert got["1e5"] == got["inf"] == schema.HIST_LEN - 1
    assert got["-inf"] == 0
    assert got["nan"] == schema.HIST_LEN


def test_histogram_batcher_equals_numpy_reference_and_skips_nan():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(1000, generator=gen) * 10.0 ** torch.randint(-14, 6, (1000,), generator=gen)
    a[:50] = 0.0
    a[50:53] = float("nan")
    a[53] = float("inf")
    b = -torch.rand(77, generator=gen).double()
    counts = tensor_stats.HistogramBatcher().counts([a, b]).numpy()
    for got, src, n_counted in ((counts[0], a, 997), (counts[1], b, 77)):
        want, ambiguous = ref_hist(src.numpy())
        assert got.sum() == n_counted
        assert np.abs(got - want).sum() <= 2 * ambiguous


def test_grad_weight_activation_stats_equal_torch_reference(tmp_path):
    path, ref = train_with_reference(tmp_path, steps=3)
    recs, tensors = records(path)
    assert sorted({k[0] for k in recs}) == [0, 1, 2]
    assert len(recs) == 3 * (2 * len(PARAMS) + len(ACTS))
    for step, r in enumerate(ref):
        for name in PARAMS:
            for kind, tensor in (("grad", r["grad"][name]), ("weight", r["weight"][name])):
                row = recs[(step, name, kind)]
                for field, want in ref_stats(tensor).items():
                    assert_close(row[field], want, f"step {step} {name} {kind} {field}")
        for name, module_type in ACTS.items():
            y = r["act"][name].double()
            row = recs[(step, name, "activation")]
            want = ref_stats(y)
            for field in ("norm", "mean", "std", "min", "max", "zero_frac"):
                assert_close(row[field], want[field], f"step {step} {name} activation {field}")
            assert row["nan_count"] == 0
            if module_type == "Sigmoid":
                sat = ((y - 0.5).abs() >= 0.49).double().mean().item()
            elif module_type == "Tanh":
                sat = (y.abs() >= 0.99).double().mean().item()
            else:
                sat = math.nan
            assert_close(row["saturated_frac"], sat, f"step {step} {name} saturated_frac", atol=0)
            dead = (y <= 0).all(dim=0).double().mean().item() if module_type == "ReLU" else math.nan
            assert_close(row["dead_frac"], dead, f"step {step} {name} dead_frac", atol=0)
    # The fixture is not trivial: the references exercise each statistic.
    last = ref[-1]
    assert 0 < recs[(2, "sigmoid", "activation")]["saturated_frac"] < 1
    assert 0 < recs[(2, "tanh", "activation")]["saturated_frac"] < 1
    assert recs[(2, "relu", "activation")]["dead_frac"] >= 5 / 16
    assert recs[(2, "fc1.weight", "grad")]["zero_frac"] >= 1 / 8
    assert (last["grad"]["fc1.weight"][:, 0] == 0).all()


def test_histograms_equal_numpy_reference_and_count_every_element(tmp_path):
    path, ref = train_with_reference(tmp_path, steps=2)
    for name in PARAMS:
        for kind in ("grad", "weight"):
            hists = hist_of(path, name, kind)
            assert sorted(hists) == [0, 1]
            for step, counts in hists.items():
                tensor = ref[step][kind][name]
                want, ambiguous = ref_hist(tensor.numpy())
                assert counts.sum() == tensor.numel() <= schema.HIST_SAMPLE_SIZE
                assert np.abs(counts - want).sum() <= 2 * ambiguous, f"{name} {kind} step {step}"
                # zero_frac is the zero bin's share
    recs, _ = records(path)
    zeros = hist_of(path, "fc1.weight", "grad")[1][ZERO]
    assert zeros > 0
    assert recs[(1, "fc1.weight", "grad")]["zero_frac"] == pytest.approx(zeros / 128)


def test_update_to_weight_ratio_is_step_norm_over_new_weight_norm(tmp_path):
    path, ref = train_with_reference(tmp_path, steps=3)
    recs, _ = records(path)
    for step, r in enumerate(ref):
        for name in PARAMS:
            after, before = r["weight"][name].double(), r["before"][name].double()
            want = (torch.linalg.vector_norm(after - before) / torch.linalg.vector_norm(after)).item()
            assert want > 0
            assert_close(recs[(step, name, "weight")]["update_ratio"], want, f"step {step} {name} ratio", rtol=1e-4)
            assert math.isnan(recs[(step, name, "grad")]["update_ratio"])


def test_nan_and_inf_gradients_are_counted_and_not_histogrammed(tmp_path):
    path, ref = train_with_reference(tmp_path, steps=2, poison_last_grad=True)
    recs, _ = records(path)
    row = recs[(1, "fc2.weight", "grad")]
    assert row["nan_count"] == 1 and row["inf_count"] == 2
    assert math.isnan(row["norm"]) and math.isnan(row["mean"])
    want = ref_stats(ref[1]["grad"]["fc2.weight"])
    for field in ("nan_count", "inf_count", "min", "max"):
        assert_close(row[field], want[field], f"poisoned {field}")
    counts = hist_of(path, "fc2.weight", "grad")[1]
    assert counts.sum() == 16 * 12 - 1  # the NaN is not binned
    assert counts[0] == 1 and counts[-1] >= 1  # -inf / +inf in the outermost bins
    want_counts, ambiguous = ref_hist(ref[1]["grad"]["fc2.weight"].numpy())
    assert np.abs(counts - want_counts).sum() <= 2 * ambiguous
    # Tensors with finite gradients still report zero counts.
    assert recs[(1, "fc1.weight", "grad")]["nan_count"] == 0
    assert recs[(0, "fc2.weight", "grad")]["inf_count"] == 0


def test_large_tensor_histogram_is_a_sample_of_exact_size_and_ratio_is_estimated(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    big = model[0].weight
    ref = []
    with Run(tmp_path, name="big") as run:
        run.watch(model, every=1)
        for _ in range(2):
            x = torch.randn(64, 512)
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            before = big.detach().clone()
            opt.step()
            ref.append((before, big.detach().clone(), big.grad.detach().clone()))
    recs, _ = records(run.path)
    for step, (before, after, grad) in enumerate(ref):
        want = (torch.linalg.vector_norm(after.double() - before) / torch.linalg.vector_norm(after.double())).item()
        got = recs[(step, "0.weight", "weight")]["update_ratio"]
        assert got == pytest.approx(want, rel=0.05)
        # Moments always use every element, not the sample.
        for field, value in ref_stats(grad).items():
            if field != "zero_frac":
                assert_close(recs[(step, "0.weight", "grad")][field], value, f"big grad {field}")
        assert_close(recs[(step, "0.weight", "weight")]["norm"], ref_stats(after)["norm"], "big weight norm")
    for kind, tensor_of in (("grad", lambda r: r[2]), ("weight", lambda r: r[1])):
        for step, counts in hist_of(run.path, "0.weight", kind).items():
            assert counts.sum() == schema.HIST_SAMPLE_SIZE
            full, _ = ref_hist(tensor_of(ref[step]).numpy())
            # The sample's distribution over bins matches the full tensor's.
            tv = 0.5 * np.abs(counts / counts.sum() - full / full.sum()).sum()
            assert tv < 0.1, f"{kind} step {step}: total variation {tv:.3f}"
    # Small tensors of the same model are histogrammed completely.
    assert hist_of(run.path, "0.bias", "grad")[0].sum() == 512


def _train_offset_model(tmp_path):
    """Norm-layer weights sit near 1 with a small spread, sigmoid outputs of small pre-activations
    near 0.5: std from |x|^2 - n*mean^2 in float32 cancels catastrophically there."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 256), nn.BatchNorm1d(256), nn.Linear(256, 256), nn.Sigmoid())
    with torch.no_grad():
        model[1].weight.copy_(1.0 + 1e-3 * torch.randn(256))  # a trained-a-little BN scale
        model[2].weight.mul_(1e-3)  # sigmoid inputs near 0: outputs 0.5 +- ~1.5e-4
        model[2].bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    outputs = {}
    model[3].register_forward_hook(lambda m, i, o: outputs.__setitem__("y", o.detach().clone()))
    with Run(tmp_path, name="offset") as run:
        run.watch(model, every=1)
        opt.zero_grad()
        model(torch.randn(64, 16)).sum().backward()
        opt.step()
    recs, _ = records(run.path)
    return recs, model[1].weight.detach().double(), outputs["y"].double()


def test_std_of_weight_far_from_zero_mean_is_accurate(tmp_path):
    recs, weight, _ = _train_offset_model(tmp_path)
    assert weight.std().item() < 2e-3 and weight.mean().item() == pytest.approx(1.0, abs=1e-2)
    assert recs[(0, "1.weight", "weight")]["std"] == pytest.approx(weight.std().item(), rel=0.01)


def test_std_of_activation_far_from_zero_mean_is_accurate(tmp_path):
    recs, _, y = _train_offset_model(tmp_path)
    assert y.std().item() < 2e-3 and y.mean().item() == pytest.approx(0.5, abs=1e-2)
    assert recs[(0, "3", "activation")]["std"] == pytest.approx(y.std().item(), rel=0.01)


def test_dead_frac_of_relu_on_sequence_output_counts_feature_units(tmp_path):
    """A Linear+ReLU applied per time step, output (batch, time, features): the units are the
    features (schema: 'fraction of units (last dimension)'), not the time positions."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        model[0].bias[:5] = -50.0  # 5 of 16 hidden units never fire
    outputs = {}
    model[1].register_forward_hook(lambda m, i, o: outputs.__setitem__("y", o.detach().clone()))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Run(tmp_path, name="seq-relu") as run:
        run.watch(model, every=1)
        model(torch.randn(4, 5, 8)).sum().backward()  # batch 4, 5 time steps
        opt.step()
    y = outputs["y"]
    want = (y <= 0).reshape(-1, 16).all(dim=0).double().mean().item()
    assert want == 5 / 16
    recs, _ = records(run.path)
    assert recs[(0, "1", "activation")]["dead_frac"] == pytest.approx(want)


def test_moment_stats_of_mixed_sizes_equal_reference_whether_stacked_or_not():
    """Small equal-size tensors are measured as rows of one stack; every row must still equal
    the per-tensor reference, whatever the mix of sizes, dtypes and empty tensors."""
    torch.manual_seed(0)
    tensors = ([torch.randn(256) * 3 + 1 for _ in range(5)] + [torch.randn(64, 64) for _ in range(2)]
               + [torch.randn(300, 70), torch.randn(3), torch.zeros(0), torch.randn(256, dtype=torch.float64),
                  torch.full((7,), -2.5)])
    got = tensor_stats.moment_stats(tensors).double()
    for t, row in zip(tensors, got):
        x = t.double().reshape(-1)
        if x.numel() == 0:
            assert row[tensor_stats.M_NUMEL] == 0 and math.isnan(row[tensor_stats.M_MIN])
            continue
        assert_close(row[tensor_stats.M_NORM].item(), torch.linalg.vector_norm(x).item(), "norm")
        assert_close(row[tensor_stats.M_SUM].item(), x.sum().item(), "sum", atol=1e-4)
        assert_close(row[tensor_stats.M_MIN].item(), x.min().item(), "min")
        assert_close(row[tensor_stats.M_MAX].item(), x.max().item(), "max")
        assert row[tensor_stats.M_NUMEL] == x.numel()
    assert len(tensor_stats._same_size_groups(tensors)) >= 2  # the stacked path was exercised
