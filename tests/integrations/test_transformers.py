"""GradwatchCallback with the real transformers Trainer (tiny random-init GPT-2 on CPU): gradients
equal the ones the optimizer steps with at the same global_step (reference callback) under
accumulation and bf16; HF's names, steps, integer epochs and end-of-run summary mapped."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from gradwatch.integrations.transformers import GradwatchCallback
from gradwatch.trainer.runlog import RunReader


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=16, length=12, vocab=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class ReferenceGrads(TrainerCallback):
    """The gradients the optimizer steps with, under the step number HF logs for that step."""

    def __init__(self, model):
        self.model, self.grads = model, {}

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.grads[state.global_step + 1] = {n: p.grad.detach().double().norm().item()
                                             for n, p in self.model.named_parameters() if p.grad is not None}


def tiny_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


@pytest.mark.parametrize("extra", [{}, {"gradient_accumulation_steps": 2, "bf16": True, "max_grad_norm": 0.5}])
def test_gradients_steps_and_names_follow_hf(tmp_path, extra):
    model = tiny_gpt2()
    reference = ReferenceGrads(model)
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=2, per_device_train_batch_size=4, learning_rate=1e-3,
        logging_steps=1, eval_strategy="epoch", save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, **extra,
    )
    callback = GradwatchCallback(logdir=tmp_path / "logs", name="gpt2", every=1)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), eval_dataset=Tokens(n=8, seed=1),
                      callbacks=[reference, callback])
    trainer.train()
    (folder,) = list((tmp_path / "logs").iterdir())
    with RunReader(folder) as reader:
        grads, _ = reader.layer_stats(kinds=("grad",))
        acts, _ = reader.layer_stats(kinds=("activation",))
        meta, status = reader.meta, reader.status()
        series = {name: reader.scalar_series(name) for name in reader.scalar_names()}
    history = trainer.state.log_history
    steps = sorted(reference.grads)
    assert steps[0] == 1 and steps == list(range(1, trainer.state.global_step + 1))
    assert sorted(grads["step"].unique()) == steps  # HF's numbering: the first optimizer step is 1
    for row in grads.to_dict("records"):
        assert row["norm"] == pytest.approx(reference.grads[row["step"]][row["name"]], rel=1e-5), row
    # GPT-2's NewGELUActivation is measured; the logits, embeddings and dropouts are not.
    assert set(acts["layer"]) == {"transformer.h.0.mlp.act", "transformer.h.1.mlp.act"}
    # HF's logged values at HF's steps, under gradwatch's names.
    logged = [h for h in history if "loss" in h]
    assert series["train_loss"]["step"].tolist() == [h["step"] for h in logged]
    assert series["train_loss"]["value"].tolist() == pytest.approx([h["loss"] for h in logged])
    assert series["grad_norm_total"]["value"].tolist() == pytest.approx([h["grad_norm"] for h in logged])
    assert series["lr"]["value"].tolist() == pytest.approx([h["learning_rate"] for h in logged])
    evals = [h for h in history if "eval_loss" in h]
    assert series["val_loss"]["step"].tolist() == [h["step"] for h in evals]
    assert series["epoch"]["value"].tolist() == [1.0, 2.0]
    assert series["epoch"]["step"].tolist() == [h["step"] for h in evals]
    # The end-of-run summary is the run's results, not a series.
    assert "total_flos" not in series and "train_runtime" not in series
    assert len(series["train_loss"]) == len(logged)
    summary = history[-1]
    assert meta["results"]["train_loss"] == pytest.approx(summary["train_loss"])
    assert meta["results"]["total_flos"] == pytest.approx(summary["total_flos"])
    assert meta["integration"] == "transformers"
    assert meta["grad_clip"] == extra.get("max_grad_norm", 1.0)
    assert status == "finished"


def test_fp16_on_cpu_trains_unscaled_in_float32_and_is_recorded_as_the_optimizer_sees_it(tmp_path):
    """accelerate accepts fp16=True on the CPU but enables neither autocast nor a GradScaler there
    (its native AMP is for accelerators), so the gradients are float32 and never scaled: the record
    equals the reference, and the run says fp16 was asked for. (Loss-scaled fp16 needs a GPU.)"""
    model = tiny_gpt2()
    reference = ReferenceGrads(model)
    logits_dtypes = set()
    model.lm_head.register_forward_hook(lambda m, i, out: logits_dtypes.add(out.dtype))
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=3, per_device_train_batch_size=4,
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                             fp16=True)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(),
                      callbacks=[reference, GradwatchCallback(logdir=tmp_path / "logs", name="fp16", every=1)])
    trainer.train()
    assert trainer.accelerator.mixed_precision == "fp16" and trainer.accelerator.scaler is None
    assert logits_dtypes == {torch.float32}
    (folder,) = list((tmp_path / "logs").iterdir())
    with RunReader(folder) as reader:
        grads, _ = reader.layer_stats(kinds=("grad",))
        assert reader.meta["precision"] == "fp16"
    assert sorted(grads["step"].unique()) == [1, 2, 3] == sorted(reference.grads)
    for row in grads.to_dict("records"):
        assert row["norm"] == pytest.approx(reference.grads[row["step"]][row["name"]], rel=1e-5), row


def test_a_run_cut_short_by_max_steps_reads_as_hf_logged_it(tmp_path):
    """max_steps=5 at 4 steps per epoch: epochs 1 and 2 logged once each (HF's fractional 1.25 once
    rounded to a second "1"), the optimizer's lr at the HF step it was used for (it was one step
    early), the Runs page's "steps" = 5 (HF numbers from 1: it once said 6), and HF's end-of-run
    summary on the Run page under "Training summary", not "Test results"."""
    from gradwatch.dashboard import components
    from gradwatch.dashboard.data import RunStore
    from gradwatch.trainer.runlog import schema

    model = tiny_gpt2()
    used_lr = {}

    class UsedLr(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            used_lr[state.global_step + 1] = optimizer.param_groups[0]["lr"]

    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=5, per_device_train_batch_size=4,
                             learning_rate=1e-3, logging_steps=1, eval_strategy="epoch", save_strategy="no",
                             report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), eval_dataset=Tokens(n=8, seed=1),
                      callbacks=[UsedLr(), GradwatchCallback(logdir=tmp_path / "logs", name="cut", every=1)])
    trainer.train()
    (folder,) = list((tmp_path / "logs").iterdir())
    with RunReader(folder) as reader:
        epoch = reader.scalar_series("epoch")
        lr = reader.scalar_series(schema.OPTIMIZER_LR)
        meta = reader.meta
    assert epoch["value"].tolist() == [1.0, 2.0] and epoch["step"].tolist() == [4, 5]
    assert len(used_lr) == 5 and len(set(used_lr.values())) == 5  # a decaying schedule: each step its own lr
    assert dict(zip(lr["step"].tolist(), lr["value"].tolist())) == pytest.approx(used_lr)
    (summary,), _ = RunStore(tmp_path / "logs").summaries(budget_s=60)
    assert summary["steps"] == 5
    sections = [block.children[0].children for block in components.meta_panel({"meta": meta, "status": "finished"})
                if hasattr(block, "children") and block.children and hasattr(block.children[0], "children")]
    assert "Training summary" in sections and "Test results" not in sections
