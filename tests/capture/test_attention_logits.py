"""AttentionLogitRecorder and AdamLagRecorder record what torch computes: the max |q.k| x scale of each
attention module's scaled_dot_product_attention call, the output log-partition, and Adam's
gradient-over-second-moment ratio."""

from __future__ import annotations

import math

import pytest

from bench.large_model_instabilities import gpt
from gradwatch.trainer.capture.adam_lag import ADAM_UPDATE_RMS, AdamLagRecorder
from gradwatch.trainer.capture.attention_logits import OUTPUT_LOG_Z, AttentionLogitRecorder
from gradwatch.trainer.runlog import RunReader

torch = pytest.importorskip("torch")


def test_recorded_signals_equal_a_direct_torch_computation(tmp_path):
    from gradwatch import Run

    torch.manual_seed(0)
    model = gpt(50, qk_norm=False, d=16, heads=2, layers=2, block=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 50, (4, 8))
    seen = {}

    def remember(name):
        def hook(module, args, output):
            b, t, c = args[0].shape
            q, k, _ = (z.view(b, t, 2, c // 2).transpose(1, 2) for z in module.qkv(args[0]).split(c, 2))
            seen[name] = float((q @ k.transpose(-2, -1)).abs().max()) / math.sqrt(c // 2)
        return hook

    for i, block in enumerate(model.blocks):
        block.attn.register_forward_hook(remember(f"blocks.{i}.attn"))
    with Run(tmp_path, name="attn") as run:
        run.watch(model, every=1)
        attention = AttentionLogitRecorder(model, run, every=1)
        lag = AdamLagRecorder(optimizer, run)
        expected_z = []
        for _ in range(3):
            logits = model(x)
            expected_z.append(float(torch.logsumexp(logits.detach(), -1).mean()))
            expected_attn = dict(seen)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), x.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        attention.close()
        lag.close()
        path = run.path
    with RunReader(path) as reader:
        scalars, _ = reader.scalars()
    last = scalars[scalars["step"] == scalars["step"].max()]
    values = dict(zip(last["name"], last["value"]))
    for name, value in expected_attn.items():
        assert values[f"attn_logit_max/{name}"] == pytest.approx(value, rel=1e-5)
    assert values[OUTPUT_LOG_Z] == pytest.approx(expected_z[-1], rel=1e-5)
    rms = scalars[scalars["name"] == ADAM_UPDATE_RMS]["value"].to_numpy()
    assert len(rms) == 2 and all(0 < r < 10 for r in rms)  # from the second step on (v exists)
