"""CUDA check of the capture: values against host references, dispatched ops, AMP unscaling, overhead.

Needs a CUDA GPU (CI has none; run it where one is lent). One short script, a few minutes:

    python bench/gpu_check.py                                  # on CUDA
    python bench/gpu_check.py --skip-overhead                  # values and op counts only
    python bench/gpu_check.py --device cpu --rounds 1 --models text   # CPU smoke run

Checks, on the GPU:
1. recorded gradient/weight norm, mean, std, min, max, NaN/Inf counts and activation mean, std,
   min, max, zero fraction equal float64 host references of the same tensors (gradients before
   optimizer.step, weights after), and every row equals the CPU host path's;
2. ops dispatched per logged step per parameter tensor and per unlogged step on (narrow copies
   of) models (a), (b) and GPT-2, against the bound of 4;
3. with torch.amp autocast(fp16) + GradScaler, the recorded gradient norms are the unscaled ones;
4. training overhead of gradwatch every step / every 10th step on models (a) and (b) of
   bench/overhead.py, timed with CUDA synchronisation, interleaved, medians of ratios.
Ends with one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gradwatch.bench_models import MODELS, NARROW, capture_extra_ops, loss_of  # noqa: E402
from gradwatch.trainer import Run  # noqa: E402
from gradwatch.trainer.runlog import RunReader  # noqa: E402

REFERENCE_FIELDS = ("norm", "mean", "std", "min", "max", "nan_count", "inf_count")
ACTIVATION_FIELDS = ("mean", "std", "min", "max", "zero_frac")


def _reference_run(tmp: str, device: torch.device, accelerator_path: bool):
    """Records of a small Tanh/ReLU MLP trained 5 steps with every=1 on `device`, and the float64
    host references of every gradient (before the step), weight (after) and activation output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 64, generator=g).to(device)
    y = torch.randint(0, 3, (128,), generator=g).to(device)
    outputs = {}
    for name in ("1", "3"):
        model[int(name)].register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach().double().cpu()))
    expected = {}
    with Run(logdir=tmp, name=f"ref-{device.type}-{'acc' if accelerator_path else 'host'}") as run:
        probe = run.watch(model, every=1)
        if accelerator_path:
            probe.use_accelerator_path()
        for step in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            grads = {n: p.grad.detach().double().cpu() for n, p in model.named_parameters()}
            opt.step()
            weights = {n: p.detach().double().cpu() for n, p in model.named_parameters()}
            expected[step] = {"grad": grads, "weight": weights, "activation": dict(outputs)}
        path = run.path
    with RunReader(path) as reader:
        stats, _ = reader.layer_stats()
    return stats, expected


def _ref_value(t: torch.Tensor, field: str) -> float:
    return {"norm": t.norm, "mean": t.mean, "std": t.std, "min": t.min, "max": t.max,
            "nan_count": lambda: t.isnan().sum(), "inf_count": lambda: t.isinf().sum(),
            "zero_frac": lambda: (t == 0).double().mean()}[field]().item()


def reference_check(tmp: str, device: torch.device) -> dict:
    """Recorded statistics against float64 host references, on `device` (on the CPU: the
    accelerator path forced, the path a GPU runs), and row for row against the CPU host path."""
    on_device, expected = _reference_run(tmp, device, accelerator_path=device.type == "cpu")
    on_host, _ = _reference_run(tmp, torch.device("cpu"), accelerator_path=False)
    worst, worst_paths, worst_zero = 0.0, 0.0, 0.0
    for row in on_device.itertuples():
        ref = expected[row.step][row.kind][row.name]
        for field in ACTIVATION_FIELDS if row.kind == "activation" else REFERENCE_FIELDS:
            want, got = _ref_value(ref, field), float(getattr(row, field))
            if field == "zero_frac":  # from the 4,096-element sample: within ~1 % (docs/log-format.md)
                worst_zero = max(worst_zero, abs(got - want))
            else:
                worst = max(worst, abs(got - want) / max(abs(want), 1e-6))
    keys = ["step", "kind", "name"]
    both = on_device.merge(on_host, on=keys, suffixes=("", "_host"))
    for field in REFERENCE_FIELDS + ("zero_frac", "update_ratio", "dead_frac", "saturated_frac"):
        a, b = both[field].to_numpy(float), both[f"{field}_host"].to_numpy(float)
        finite = ~(np.isnan(a) & np.isnan(b))
        if finite.any():
            worst_paths = max(worst_paths, float((np.abs(a - b)[finite] / np.maximum(np.abs(b[finite]), 1e-6)).max()))
    return {"reference_rows": int(len(on_device)), "reference_max_rel_err": worst,
            "activation_zero_frac_max_abs_err": worst_zero,
            "rows_equal_host_path": len(both) == len(on_host) == len(on_device),
            "device_vs_host_path_max_rel_err": worst_paths}


def dispatch_counts(tmp: str, device: torch.device) -> dict:
    """Ops capture dispatches on `device` (the accelerator path; forced on the CPU) per logged step
    per parameter tensor and per unlogged step, on narrow copies of models (a), (b) and GPT-2
    (the counts follow the tensors, not their sizes): the issue's bound is 4 for both."""
    out = {}
    for key in ("text", "deep", "gpt2"):
        counts = capture_extra_ops(NARROW[key], Path(tmp) / f"counts-{key}", 10, accelerator_path=device.type == "cpu",
                                   device=str(device))
        per_tensor = counts["logged"] / counts["tensors"]
        out[f"ops_{key}_logged_per_tensor"] = round(per_tensor, 2)
        out[f"ops_{key}_unlogged"] = counts["unlogged"]
        out[f"ops_{key}_within_bounds"] = bool(per_tensor <= 4 and counts["unlogged"] <= 4)
    return out


def amp_check(tmp: str) -> dict:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 3)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**14)
    x = torch.randn(128, 64, device=device)
    y = torch.randint(0, 3, (128,), device=device)
    unscaled = {}
    with Run(logdir=tmp, name="gpu-amp") as run:
        probe = run.watch(model, every=1)
        for _ in range(4):
            opt.zero_grad()
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            step = probe.step
            unscaled[step] = {n: float(p.grad.float().norm()) for n, p in model.named_parameters()}
            scaler.step(opt)
            scaler.update()
        path = run.path
    with RunReader(path) as reader:
        stats, _ = reader.layer_stats(kinds=("grad",))
    worst = 0.0
    for row in stats.itertuples():
        want = unscaled[row.step][row.name]
        worst = max(worst, abs(row.norm - want) / max(want, 1e-12))
    return {"amp_rows": int(len(stats)), "amp_max_rel_err": worst}


# Steps per round per model; the GPT-2-style model is also measured every 100th step.
OVERHEAD_STEPS = {"text": 50, "deep": 50, "resnet": 50, "gpt2": 20}


def overhead(tmp: str, device: torch.device, rounds: int = 9, models=tuple(OVERHEAD_STEPS), scale: float = 1.0) -> dict:
    """Ratios to no logging, interleaved in rounds (wall time, synchronised on CUDA), every step and
    every 10th (and 100th for gpt2). `scale` shortens the rounds (CPU smoke runs)."""
    results = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for key in models:
        steps = max(2, int(OVERHEAD_STEPS[key] * scale))
        builder, batch = MODELS[key]
        variants = []
        for every in (None, 1, 10, 100) if key == "gpt2" else (None, 1, 10):
            torch.manual_seed(0)
            model = builder().to(device)
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            data = tuple(t.to(device) for t in batch(torch.Generator().manual_seed(1)))
            run = None
            if every is not None:
                run = Run(logdir=tmp, name=f"gpu-{key}-{every}")
                run.watch(model, every=every)
            variants.append((every, model, opt, data, run))

        def train(v, steps=steps):
            every, model, opt, data, run = v
            sync()
            start = time.perf_counter()
            for i in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = loss_of(model, data)
                loss.backward()
                opt.step()
                value = loss.item()  # a typical loop reads the loss each step (baseline too)
                if run is not None:
                    run.log(i, train_loss=value)
            if run is not None:
                run.flush()
            sync()
            return time.perf_counter() - start

        for v in variants:
            train(v)
        ratios = {v[0]: [] for v in variants[1:]}
        totals = {v[0]: [0.0, 0.0] for v in variants[1:]}
        for _ in range(rounds):
            base = train(variants[0])
            for v in variants[1:]:
                t = train(v)
                ratios[v[0]].append(t / base)
                totals[v[0]][0] += t
                totals[v[0]][1] += base
        results[f"gpu_{key}_baseline_ms_per_step"] = round(base / steps * 1e3, 3)
        for every, values in ratios.items():
            results[f"gpu_{key}_every{every}"] = round(statistics.median(values), 3)
            results[f"gpu_{key}_every{every}_total"] = round(totals[every][0] / totals[every][1], 3)
        for v in variants:
            if v[4] is not None:
                v[4].finish()
    return results


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu: a CPU smoke run (accelerator path forced)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--models", default=",".join(OVERHEAD_STEPS))
    parser.add_argument("--skip-overhead", action="store_true", help="only the value checks and op counts")
    args = parser.parse_args()
    device = torch.device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    tmp = tempfile.mkdtemp(prefix="gw-gpu-")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to check (--device cpu smoke-runs it on the CPU)",
              file=sys.stderr)
        sys.exit(2)
    out = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__}
    out.update(reference_check(tmp, device))
    print(json.dumps(out), flush=True)  # the value checks first: they are the point of a short lease
    out.update(dispatch_counts(tmp, device))
    print(json.dumps(out), flush=True)
    if device.type == "cuda":
        out.update(amp_check(tmp))
    else:
        out["skipped"] = ["amp_check"]  # GradScaler's unscaling is about CUDA
    if not args.skip_overhead:
        out.update(overhead(tmp, device, args.rounds, models, scale=1.0 if device.type == "cuda" else 0.1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
