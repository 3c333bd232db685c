"""Where a logged step's capture time goes: per-part milliseconds on models (a) and (b).

Wraps the probe's stages with timers (CPU ops are synchronous, so wall time is exact there) and
prints baseline and logged-step times with the breakdown. A diagnostic aid for bench/overhead.py.

    python bench/capture_breakdown.py
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import MODELS  # noqa: E402

from gradwatch.trainer import Run  # noqa: E402
from gradwatch.trainer.capture import activation_stats, probe, tensor_stats  # noqa: E402

TIMES: dict[str, float] = collections.defaultdict(float)


def timed(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> None:
    torch.set_num_threads(2)
    timed(probe.Probe, "_before_step", "grads (pre-step hook)")
    timed(probe.Probe, "_record", "weights+record (post-step)")
    timed(activation_stats.ActivationAccumulator, "add", "activations (forward hooks)")
    timed(tensor_stats, "moment_stats", "  of which: norm/sum/min/max")
    timed(tensor_stats.HistogramBatcher, "counts", "  of which: histograms")
    report = {}
    for key, steps in (("text", 60), ("deep", 12)):
        builder, batch = MODELS[key]
        torch.manual_seed(0)
        model = builder()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = batch(torch.Generator().manual_seed(1))

        def train(n, model=model, opt=opt, x=x, y=y):
            start = time.perf_counter()
            for _ in range(n):
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            return (time.perf_counter() - start) / n

        train(5)
        base = min(train(steps) for _ in range(3))
        with Run(logdir=tempfile.mkdtemp(prefix="gw-breakdown-"), name=key) as run:
            run.watch(model, every=1)
            train(5)
            TIMES.clear()
            logged = min(train(steps) for _ in range(3))
            parts = {k: round(v / (3 * steps) * 1e3, 3) for k, v in TIMES.items()}
        print(f"{key}: baseline {base * 1e3:.2f} ms/step, every step {logged * 1e3:.2f} ms/step "
              f"(ratio {logged / base:.2f})")
        for label, ms in parts.items():
            print(f"    {label:32s} {ms:8.3f} ms")
        report[key] = {"baseline_ms": round(base * 1e3, 3), "logged_ms": round(logged * 1e3, 3), **parts}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
