"""dashboard.series: downsampling keeps extremes; per-layer tables match slow reference definitions."""

import math

import numpy as np
import pandas as pd
import pytest

from gradwatch.dashboard import series


def test_downsample_keeps_extremes_first_last_and_bounds_size():
    rng = np.random.default_rng(0)
    steps = np.arange(100_000)
    values = rng.normal(size=len(steps))
    values[12_345] = 50.0  # a spike
    values[77_777] = -40.0  # a dip
    out_steps, out_values = series.downsample_extremes(steps, values, 1000)
    assert len(out_steps) <= 1002
    assert np.all(np.diff(out_steps) > 0)
    assert out_steps[0] == 0 and out_steps[-1] == 99_999
    assert 12_345 in out_steps and 77_777 in out_steps
    assert out_values.max() == 50.0 and out_values.min() == -40.0
    # Every kept point is a real (step, value) pair.
    assert np.array_equal(values[out_steps], out_values)


def test_downsample_small_series_is_unchanged_and_drops_nonfinite():
    steps, values = [3, 1, 2], [0.3, float("nan"), 0.2]
    out_steps, out_values = series.downsample_extremes(steps, values, 10)
    assert out_steps.tolist() == [2, 3] and out_values.tolist() == [0.2, 0.3]
    bad_steps, _ = series.nonfinite_points([1, 2, 3], [1.0, float("inf"), float("nan")])
    assert bad_steps.tolist() == [2, 3]
    with pytest.raises(ValueError, match="max_points"):
        series.downsample_extremes(steps, values, 2)


def _stats_rows():
    rows = []
    for step in (0, 10):
        for layer, scale in (("fc1", 1.0), ("fc2", 2.0)):
            for param, norm, ratio, mean, std in (("weight", 3.0 * scale, 1e-3, 0.01, 0.2),
                                                  ("bias", 4.0 * scale, 2e-3, 0.1, 0.05)):
                rows.append(dict(step=step, layer=layer, param=param, name=f"{layer}.{param}", kind="grad",
                                 norm=norm + step, mean=0.0, std=1.0, min=-5.0 * scale, max=2.0,
                                 update_ratio=np.nan, saturated_frac=np.nan, dead_frac=np.nan, nan_count=0,
                                 inf_count=0))
                rows.append(dict(step=step, layer=layer, param=param, name=f"{layer}.{param}", kind="weight",
                                 norm=norm, mean=mean, std=std, min=-1.0, max=1.0, update_ratio=ratio,
                                 saturated_frac=np.nan, dead_frac=np.nan, nan_count=0, inf_count=0))
        rows.append(dict(step=step, layer="act1", param="", name="act1", kind="activation", norm=1.0, mean=0.5,
                         std=0.1, min=0.0, max=1.0, update_ratio=np.nan, saturated_frac=0.25 + step / 100,
                         dead_frac=np.nan, nan_count=0, inf_count=0))
    return pd.DataFrame(rows)


def test_layer_table_grad_norm_is_root_sum_of_squares_in_forward_order():
    table = series.layer_table(_stats_rows(), "grad_norm", order=["fc2", "act1", "fc1"])
    assert list(table.columns) == ["fc2", "fc1"]
    assert table.loc[0, "fc1"] == pytest.approx(math.hypot(3.0, 4.0))
    assert table.loc[10, "fc2"] == pytest.approx(math.hypot(16.0, 18.0))
    biggest = series.layer_table(_stats_rows(), "grad_max_abs")
    assert biggest.loc[0, "fc2"] == pytest.approx(10.0)


def test_layer_table_update_ratio_combines_parameters_by_weight_norm():
    table = series.layer_table(_stats_rows(), "update_ratio")
    w, b = 3.0, 4.0
    expected = math.sqrt(((1e-3 * w) ** 2 + (2e-3 * b) ** 2) / (w**2 + b**2))
    assert table.loc[0, "fc1"] == pytest.approx(expected)


def test_layer_table_weight_mean_std_use_weight_matrices_only():
    mean = series.layer_table(_stats_rows(), "weight_mean")
    std = series.layer_table(_stats_rows(), "weight_std")
    assert mean.loc[0, "fc1"] == pytest.approx(0.01)
    assert std.loc[0, "fc1"] == pytest.approx(0.2)


def test_layer_table_activation_fractions_and_unknown_quantity():
    table = series.layer_table(_stats_rows(), "saturated_frac")
    assert table["act1"].tolist() == pytest.approx([0.25, 0.35])
    assert series.layer_table(_stats_rows(), "dead_frac").empty
    with pytest.raises(ValueError, match="unknown per-layer quantity"):
        series.layer_table(_stats_rows(), "nope")
