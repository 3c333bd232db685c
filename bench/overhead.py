"""Capture overhead: gradwatch vs no logging, TensorBoard histograms and wandb.watch, side by side.

All variants train their own copy of the same model in one process, interleaved round by round;
each variant's time is divided by the baseline's time from the same round, and the median of those
ratios is reported (the machine is noisy; interleaving cancels drift). Ends with one JSON line.

    python bench/overhead.py [--rounds 15] [--skip-anchors] [--models text,deep,resnet,gpt2]

Variants per model: statistics every step, every 10th, every 100th, "auto", and "unlogged" (only
step 0 logs statistics: the cost of all other steps, every layer's every-step gradient norm included).

Times are process CPU time (time.process_time(): it counts the writer thread too and is far less
disturbed than wall time by other processes on a shared machine), wall time beside it. Ratios:
the median over rounds (rounds hold whole every-10 periods) and, for every 100th step and "auto"
whose periods are longer than a round, the ratio of totals over all rounds. It also prints the ops
capture dispatches per logged step and per unlogged step (gradwatch.bench_models.capture_extra_ops).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradwatch import bench_models  # noqa: E402
from gradwatch.trainer import Run  # noqa: E402
from gradwatch.trainer.runlog import schema  # noqa: E402

TextModel = bench_models.TextModel
MODELS = bench_models.MODELS
# Steps per round (multiples of 10: every-10 rounds hold whole periods) and whether the TensorBoard
# and wandb anchors run on the model (their full-model histograms of GPT-2 would take minutes).
ROUND_STEPS = {"text": 40, "deep": 10, "resnet": 20, "gpt2": 10}
ANCHORED = {"text", "deep", "resnet"}
UNLOGGED = 10**9  # a cadence that logs step 0 only


class Variant:
    """One way of training: a model copy, its optimizer and what it logs each step."""

    def __init__(self, name, model_key, optimizer, tmp, every=None, kind="none", wandb_run=None):
        builder, batch = MODELS[model_key]
        torch.manual_seed(0)
        self.name = name
        self.model = builder()
        self.opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(self.model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(1)
        self.batch = batch(g)
        self.kind, self.every, self.step = kind, every, 0
        self.run = self.tb = None
        if kind == "gradwatch":
            self.run = Run(logdir=tmp, name=name)
            self.run.watch(self.model, every=every)
            self.probe = self.run.probe
        elif kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=os.path.join(tmp, name))
        elif kind == "wandb":
            import wandb

            wandb.watch(self.model, log="all", log_freq=every, idx=hash(name) % 10_000)
            self.wandb_run = wandb_run

    def train(self, steps: int) -> tuple[float, float]:
        """(process CPU seconds, wall seconds) of `steps` training steps and their logging."""
        start, start_wall = time.process_time(), time.perf_counter()
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=True)
            loss = bench_models.loss_of(self.model, self.batch)
            loss.backward()
            self.opt.step()
            if self.kind == "gradwatch":
                self.run.log(self.step, train_loss=loss.item())
            elif self.kind == "tensorboard" and self.step % self.every == 0:
                for pname, p in self.model.named_parameters():
                    self.tb.add_histogram(f"weights/{pname}", p, self.step)
                    self.tb.add_histogram(f"grads/{pname}", p.grad, self.step)
                self.tb.add_scalar("loss", loss.item(), self.step)
            elif self.kind == "naive" and self.step % self.every == 0:
                parts = []
                for p in self.model.parameters():
                    for t in (p.detach(), p.grad):
                        lo, hi = torch.aminmax(t)
                        parts += [torch.histc(t, bins=64), torch.stack([lo, hi, t.norm()])]
                torch.cat(parts).cpu()  # one host copy
            elif self.kind == "wandb":
                self.wandb_run.log({f"{self.name}/loss": loss.item()})
            else:
                loss.item()
            self.step += 1
        # Work a variant deferred to a background thread is its own cost: finish it inside its
        # own timing, or it would run during (and be charged to) the next variant in the round.
        if self.run is not None:
            self.run.flush()
        if self.tb is not None:
            self.tb.flush()
        return time.process_time() - start, time.perf_counter() - start_wall

    def close(self):
        if self.run is not None:
            self.run.finish()
        if self.tb is not None:
            self.tb.close()


def bytes_per_record(tmp: str) -> float:
    """Bytes on disk per parameter tensor per logged step (gradient + weight + activations)."""
    logdir = os.path.join(tmp, "size")
    model = TextModel()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    batch = MODELS["text"][1](g)
    steps = 200
    with Run(logdir=logdir, name="size") as run:
        run.watch(model, every=1)
        for _ in range(steps):
            opt.zero_grad()
            bench_models.loss_of(model, batch).backward()
            opt.step()
        run_dir = run.path
    import sqlite3

    conn = sqlite3.connect(run_dir / schema.DB_FILENAME)
    (payload,) = conn.execute(
        "SELECT SUM(LENGTH(hist)) + COUNT(*) * 80 FROM stats"
    ).fetchone()  # 80 bytes: ten 8-byte numbers and the row header, a fair per-row cost
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    n_tensors = sum(1 for _ in model.parameters())
    on_disk = os.path.getsize(run_dir / schema.DB_FILENAME)
    return {
        "bytes_per_layer_record": round(on_disk / (steps * n_tensors), 1),
        "payload_bytes_per_layer_record": round(payload / (steps * n_tensors), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--skip-anchors", action="store_true", help="only gradwatch vs baseline")
    parser.add_argument("--models", default="text,deep,resnet,gpt2",
                        help="comma-separated: text (model a), deep (model b), resnet, gpt2 (GPT-2-style, 148 tensors)")
    parser.add_argument("--gpt2-rounds", type=int, default=2, help="rounds for the GPT-2-style model (slow on CPU)")
    parser.add_argument("--skip-counts", action="store_true", help="do not count dispatched ops")
    parser.add_argument("--anchors", default="naive,tensorboard,wandb", help="comma-separated anchors to compare")
    args = parser.parse_args()
    anchors = set() if args.skip_anchors else {a.strip() for a in args.anchors.split(",") if a.strip()}
    for anchor in sorted(anchors):
        try:
            if anchor != "naive":
                __import__("torch.utils.tensorboard" if anchor == "tensorboard" else anchor)
        except ImportError:
            print(f"anchor {anchor} is not installed here; left out", file=sys.stderr)
            anchors.discard(anchor)
    torch.set_num_threads(2)
    tmp = tempfile.mkdtemp(prefix="gw-bench-")
    wandb_run = None
    if "wandb" in anchors:
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        wandb_run = wandb.init(mode="offline", dir=tmp, project="gradwatch-bench")
    results = {}
    try:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        for model_key in models:
            steps = ROUND_STEPS[model_key]
            rounds = args.gpt2_rounds if model_key == "gpt2" else args.rounds
            cadences = (10, 100, "auto") if model_key == "gpt2" else (1, 10, 100, "auto")
            variants = [Variant("baseline", model_key, args.optimizer, tmp)]
            for every in cadences:
                variants.append(Variant(f"{model_key}_every{every}", model_key, args.optimizer, tmp, every, "gradwatch"))
            # Only step 0 (in the warm-up) logs statistics: what every other step costs, the
            # every-step per-layer gradient norms included.
            variants.append(Variant(f"{model_key}_unlogged", model_key, args.optimizer, tmp, UNLOGGED, "gradwatch"))
            for every in (1, 10) if model_key in ANCHORED else ():
                for anchor in ("naive", "tensorboard", "wandb"):
                    if anchor in anchors:
                        variants.append(Variant(f"{anchor}_{model_key}_every{every}", model_key, args.optimizer, tmp,
                                                every, anchor, wandb_run))
            for v in variants:
                v.train(2 if model_key == "gpt2" else 5)  # warm-up: allocator, first-call costs, layouts
            ratios = {v.name: [] for v in variants[1:]}
            totals = {v.name: [0.0, 0.0, 0.0, 0.0] for v in variants[1:]}  # cpu, base cpu, wall, base wall
            for _ in range(rounds):
                base = variants[0].train(steps)
                times = {v.name: v.train(steps) for v in variants[1:]}
                base_after = variants[0].train(steps)
                # Average the baseline before and after to cancel drift within the round.
                base_cpu, base_wall = (base[0] + base_after[0]) / 2, (base[1] + base_after[1]) / 2
                for name, (cpu, wall) in times.items():
                    ratios[name].append(cpu / base_cpu)
                    t = totals[name]
                    t[0], t[1], t[2], t[3] = t[0] + cpu, t[1] + base_cpu, t[2] + wall, t[3] + base_wall
            base_step = variants[0].train(steps)[0] / steps
            print(f"{model_key}: baseline step {base_step * 1e3:.1f} ms CPU, {rounds} rounds of {steps} steps")
            for v in variants[1:]:
                values, t = ratios[v.name], totals[v.name]
                results[v.name] = {"median": round(statistics.median(values), 3), "total": round(t[0] / t[1], 3),
                                   "wall_total": round(t[2] / t[3], 3)}
                extra = f", every -> {v.probe.every}" if v.kind == "gradwatch" and v.every == "auto" else ""
                print(f"  {v.name:26s} CPU ratio median {results[v.name]['median']:.3f} "
                      f"(min {min(values):.3f}, max {max(values):.3f}), total {results[v.name]['total']:.3f}; "
                      f"wall total {results[v.name]['wall_total']:.3f}{extra}")
                if v.kind == "gradwatch" and v.every == "auto":
                    results[v.name]["chosen_every"] = v.probe.every
            for v in variants:
                v.close()
            if not args.skip_counts:
                counts = bench_models.capture_extra_ops("gpt2-narrow" if model_key == "gpt2" else model_key,
                                                        os.path.join(tmp, f"counts-{model_key}"))
                results[f"{model_key}_ops"] = {k: counts[k] for k in ("logged", "unlogged", "tensors")}
                print(f"  dispatched ops: logged step +{counts['logged']:.0f} "
                      f"({counts['logged'] / counts['tensors']:.2f} per tensor, {counts['tensors']} tensors), "
                      f"unlogged step +{counts['unlogged']:.0f}")
        results.update(bytes_per_record(tmp))
    finally:
        if wandb_run is not None:
            wandb_run.finish()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
