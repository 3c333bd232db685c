"""Capture overhead: gradwatch vs no logging, TensorBoard histograms and wandb.watch, side by side.

All variants train their own copy of the same model in one process, interleaved round by round;
each variant's time is divided by the baseline's time from the same round, and the median of those
ratios is reported (the machine is noisy; interleaving cancels drift). Ends with one JSON line.

    python bench/overhead.py [--rounds 15] [--skip-anchors]
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
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradwatch.trainer import Run  # noqa: E402
from gradwatch.trainer.runlog import schema  # noqa: E402


class TextModel(nn.Module):
    """Model (a): Embedding(20000, 64) + mean pooling + 5 Linear(256) sigmoid layers + 3 classes."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20000, 64)
        layers, width = [], 64
        for _ in range(5):
            layers += [nn.Linear(width, 256), nn.Sigmoid()]
            width = 256
        self.mlp = nn.Sequential(*layers, nn.Linear(256, 3))

    def forward(self, tokens):
        return self.mlp(self.embedding(tokens).mean(dim=1))


def deep_model():
    """Model (b): 20 Linear(512) ReLU layers."""
    layers = []
    for _ in range(20):
        layers += [nn.Linear(512, 512), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(512, 10))


MODELS = {
    "text": (TextModel, lambda g: (torch.randint(0, 20000, (64, 32), generator=g), torch.randint(0, 3, (64,), generator=g))),
    "deep": (deep_model, lambda g: (torch.randn(128, 512, generator=g), torch.randint(0, 10, (128,), generator=g))),
}


class Variant:
    """One way of training: a model copy, its optimizer and what it logs each step."""

    def __init__(self, name, model_key, optimizer, tmp, every=None, kind="none", wandb_run=None):
        builder, batch = MODELS[model_key]
        torch.manual_seed(0)
        self.name = name
        self.model = builder()
        self.opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(self.model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        self.x, self.y = batch(g)
        self.kind, self.every, self.step = kind, every, 0
        self.run = self.tb = None
        if kind == "gradwatch":
            self.run = Run(logdir=tmp, name=name)
            self.run.watch(self.model, every=every)
        elif kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=os.path.join(tmp, name))
        elif kind == "wandb":
            import wandb

            wandb.watch(self.model, log="all", log_freq=every, idx=hash(name) % 10_000)
            self.wandb_run = wandb_run

    def train(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.model(self.x), self.y)
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
        return time.perf_counter() - start

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
    x, y = MODELS["text"][1](g)
    steps = 200
    with Run(logdir=logdir, name="size") as run:
        run.watch(model, every=1)
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
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
    parser.add_argument("--models", default="text,deep", help="comma-separated: text (model a), deep (model b)")
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
        for model_key, steps in (("text", 40), ("deep", 10)):  # multiples of 10: every-10 rounds hold whole periods
            if model_key not in models:
                continue
            variants = [Variant("baseline", model_key, args.optimizer, tmp)]
            for every in (1, 10):
                variants.append(Variant(f"{model_key}_every{every}", model_key, args.optimizer, tmp, every, "gradwatch"))
            for every in (1, 10):
                if "naive" in anchors:
                    variants.append(Variant(f"naive_{model_key}_every{every}", model_key, args.optimizer, tmp, every, "naive"))
                if "tensorboard" in anchors:
                    variants.append(Variant(f"tb_{model_key}_every{every}", model_key, args.optimizer, tmp, every, "tensorboard"))
                if "wandb" in anchors:
                    variants.append(Variant(f"wandb_{model_key}_every{every}", model_key, args.optimizer, tmp, every, "wandb", wandb_run))
            for v in variants:
                v.train(5)  # warm-up: allocator, first-call costs, histogram index caches
            ratios = {v.name: [] for v in variants[1:]}
            for _ in range(args.rounds):
                base = variants[0].train(steps)
                for v in variants[1:]:
                    ratios[v.name].append(v.train(steps) / base)
                base_after = variants[0].train(steps)
                # Average the baseline before and after to cancel drift within the round.
                for v in variants[1:]:
                    ratios[v.name][-1] *= base / ((base + base_after) / 2)
            for name, values in ratios.items():
                results[name] = round(statistics.median(values), 3)
                print(f"{name:24s} median ratio {results[name]:.3f}  (min {min(values):.3f}, max {max(values):.3f})")
            for v in variants:
                v.close()
        results.update(bytes_per_record(tmp))
    finally:
        if wandb_run is not None:
            wandb_run.finish()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
