"""CUDA check of the capture: correctness against a host reference, AMP unscaling, and overhead.

Needs a CUDA GPU (CI has none; run it where one is lent):

    python bench/gpu_check.py                                  # on CUDA
    python bench/gpu_check.py --device cpu --rounds 1 --models text,resnet   # CPU smoke run

Checks, on the GPU:
1. recorded gradient/weight norms, min, max, mean equal a float64 host reference of the same
   tensors (captured with the same hooks' timing: gradients before optimizer.step, weights after);
2. with torch.amp autocast(fp16) + GradScaler, the recorded gradient norms are the unscaled ones;
3. training overhead of gradwatch every step / every 10th step on models (a) and (b) of
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

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gradwatch.bench_models import MODELS, loss_of  # noqa: E402
from gradwatch.trainer import Run  # noqa: E402
from gradwatch.trainer.runlog import RunReader  # noqa: E402


def reference_check(tmp: str) -> dict:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(128, 64, device=device)
    y = torch.randint(0, 3, (128,), device=device)
    expected = {}
    with Run(logdir=tmp, name="gpu-ref") as run:
        run.watch(model, every=1)
        for step in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            grads = {n: p.grad.detach().double().cpu() for n, p in model.named_parameters()}
            opt.step()
            weights = {n: p.detach().double().cpu() for n, p in model.named_parameters()}
            expected[step] = (grads, weights)
        path = run.path
    worst = 0.0
    with RunReader(path) as reader:
        stats, _ = reader.layer_stats(kinds=("grad", "weight"))
    for row in stats.itertuples():
        grads, weights = expected[row.step]
        ref = (grads if row.kind == "grad" else weights)[row.name]
        for value, want in ((row.norm, ref.norm()), (row.min, ref.min()), (row.max, ref.max()), (row.mean, ref.mean())):
            err = abs(float(value) - float(want)) / max(abs(float(want)), 1e-6)
            worst = max(worst, err)
    return {"gpu_reference_rows": int(len(stats)), "gpu_reference_max_rel_err": worst}


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
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu: a CPU smoke run of the overhead part")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--models", default=",".join(OVERHEAD_STEPS))
    args = parser.parse_args()
    device = torch.device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    tmp = tempfile.mkdtemp(prefix="gw-gpu-")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; nothing to check (--device cpu runs the overhead part)",
                  file=sys.stderr)
            sys.exit(2)
        out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
        out.update(reference_check(tmp))
        out.update(amp_check(tmp))
        out.update(overhead(tmp, device, args.rounds, models))
    else:
        # The reference and AMP checks are about CUDA (device copies, GradScaler): skipped here.
        out = {"device": "cpu", "torch": torch.__version__, "skipped": ["reference_check", "amp_check"]}
        out.update(overhead(tmp, device, args.rounds, models, scale=0.1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
