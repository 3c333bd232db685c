"""Every remedy's code runs against the model it was written for.

A plain loop with a bias-free MLP under AdamW + OneCycle (recorded through the capture: the optimizer
class and hyperparameters come from the run, not from a guess), and HF BERT and GPT-2 models built
from configs (random init; the model config summary as the HF integration writes it). Each remedy's
code is executed with the user's objects in scope; "..." (the user's other arguments) is filled in
the way the user would."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from gradwatch.trainer.diagnose import RunData
from gradwatch.trainer.diagnose.flags import REMEDIES
from gradwatch.trainer.diagnose.remedies import remedy_code
from gradwatch.trainer.runlog import RunReader

torch = pytest.importorskip("torch")
nn = torch.nn


def _exec_torch(code: str, scope: dict) -> None:
    if "self.q_norm" in code:
        # QK layer norm goes inside an attention module's forward, after adding the two norms the
        # comment names: run it there, in a small GPT's attention
        from bench.large_model_instabilities import gpt

        attention = gpt(16, qk_norm=False, d=16, heads=2, layers=1, block=4).blocks[0].attn
        attention.q_norm, attention.k_norm = nn.LayerNorm(8), nn.LayerNorm(8)
        scope = dict(scope, self=attention, q=torch.randn(1, 2, 4, 8), k=torch.randn(1, 2, 4, 8))
        exec(compile(code, "<remedy>", "exec"), scope)
        assert torch.allclose(scope["q"].mean(-1), torch.zeros(1, 2, 4), atol=1e-5)
        return
    if code.lstrip().startswith("return "):
        code = "def configure_optimizers(self):\n    " + code.replace("\n", "\n    ") + "\nconfigure_optimizers(model)"
    exec(compile(code, "<remedy>", "exec"), scope)


def bias_free_run(tmp_path, integration: str | None = None):
    from gradwatch import Run

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.ReLU(), nn.Linear(16, 2, bias=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=20)
    with Run(tmp_path, name="bias-free", config={"num_classes": 2}) as run:
        run.watch(model, every=5)
        for step in range(10):
            loss = nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.randint(0, 2, (4,)))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            run.log(step, train_loss=float(loss))
        if integration:
            run.set_meta(integration=integration)
        path = run.path
    with RunReader(path) as reader:
        return model, optimizer, RunData.from_reader(reader)


def test_every_torch_remedy_runs_on_a_bias_free_model_with_the_recorded_optimizer(tmp_path):
    model, optimizer, data = bias_free_run(tmp_path)
    recorded = data.meta["optimizer"]
    group = recorded["param_groups"][0]
    assert recorded["class"] == "AdamW" and group["betas"][1] == 0.95 and group["max_lr"] == 3e-3  # OneCycle cycles beta1
    monkey_cwd = tmp_path / "cwd"
    monkey_cwd.mkdir()
    import os

    old = os.getcwd()
    os.chdir(monkey_cwd)
    try:
        ran = 0
        for remedy in REMEDIES:
            code = remedy_code(remedy, data)
            if not code:
                continue
            scope = {"torch": torch, "nn": nn, "model": model, "optimizer": optimizer, "width": 16,
                     "input_size": 8, "hidden_size": 16, "val_loss": 0.5, "best_val_loss": 1.0,
                     "loss": torch.tensor(1.0), "logits": torch.randn(4, 2)}
            if "OneCycleLR" in code:
                code = code.replace(", ...)", ", total_steps=20)")
            _exec_torch(code, scope)
            ran += 1
            if remedy in ("lower-lr", "higher-lr", "l2"):
                # written for the user's optimizer: AdamW (with its betas), or OneCycle's max_lr
                assert "AdamW" in code or "OneCycleLR" in code, code
            if remedy == "lower-lr":
                assert "max_lr=0.001" in code  # a third of OneCycle's peak, where the lr really comes from
        assert ran >= 10
    finally:
        os.chdir(old)


def test_lightning_remedies_run_in_configure_optimizers_and_trainer(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    model, optimizer, data = bias_free_run(tmp_path, integration="lightning")
    for remedy in REMEDIES:
        code = remedy_code(remedy, data)
        if not code:
            continue
        scope = {"torch": torch, "nn": nn, "model": model, "Trainer": pl.Trainer,
                 "EarlyStopping": pl.callbacks.EarlyStopping, "width": 16, "input_size": 8, "hidden_size": 16,
                 "val_loss": 0.5, "best_val_loss": 1.0, "loss": torch.tensor(1.0), "optimizer": optimizer,
                 "logits": torch.randn(4, 2)}
        if "OneCycleLR" in code:
            code = code.replace(", ...)", ", total_steps=20)")
        code = code.replace("Trainer(", "Trainer(logger=False, enable_checkpointing=False, ")
        _exec_torch(code, scope)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_hf_remedies_are_written_for_the_models_config_class(tmp_path, kind):
    transformers = pytest.importorskip("transformers")
    from gradwatch.integrations.transformers import model_config_summary

    if kind == "bert":
        config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, num_labels=3)
        model = transformers.BertForSequenceClassification(config)
    else:
        config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2)
        model = transformers.GPT2LMHeadModel(config)
    meta = {"integration": "transformers", "model_config": model_config_summary(model),
            "config": {"learning_rate": 5e-5}}
    data = RunData.from_frames(pd.DataFrame({"step": [1, 2], "name": ["train_loss"] * 2, "value": [2.0, 1.9]}),
                               meta=meta)
    assert data.uniform_loss() == pytest.approx(__import__("math").log(3 if kind == "bert" else 64))
    ran = 0
    for remedy in REMEDIES:
        code = remedy_code(remedy, data)
        if not code or not re.search(r"\b(config|args|trainer|model)\b", code):
            continue
        scope = {"torch": torch, "nn": nn, "model": model, "TrainingArguments": transformers.TrainingArguments,
                 "Trainer": transformers.Trainer, "EarlyStoppingCallback": transformers.EarlyStoppingCallback,
                 type(config).__name__: type(config), "width": 16, "input_size": 8, "hidden_size": 16,
                 "val_loss": 0.5, "best_val_loss": 1.0, "loss": torch.tensor(1.0)}
        code = code.replace("TrainingArguments(...,", f"TrainingArguments(output_dir={str(tmp_path)!r},")
        code = code.replace("Trainer(...,", f"Trainer(model=model, args=TrainingArguments(output_dir={str(tmp_path / 'o')!r}),")
        code = code.replace(f"{type(config).__name__}(...,", f"{type(config).__name__}(vocab_size=64,")
        if "Config(" in code:
            assert type(config).__name__ in code  # BertConfig for BERT, GPT2Config for GPT-2
        exec(compile(code, "<remedy>", "exec"), scope)
        if "config" in scope and isinstance(scope["config"], type(config)):
            type(model)(scope["config"])  # the model builds from the changed config
        ran += 1
    assert ran >= 5
