"""The README's examples for each training stack run as written, with the names they assume
(model, loaders, args) defined beforehand, and produce a run folder with layer records."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import lightning
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from gradwatch.trainer.capture.probe import StepNotSeenWarning
from gradwatch.trainer.runlog import RunReader

from .test_lightning import Classifier, loaders
from .test_transformers import Tokens

README = Path(__file__).resolve().parents[2] / "README.md"


def example(name: str) -> str:
    found = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert found, f"README has no example {name!r}"
    return found.group(1)


def only_run(logdir: Path) -> Path:
    (folder,) = [p for p in logdir.iterdir() if not p.name.startswith(".")]
    return folder


def assert_recorded(folder: Path, integration: str | None) -> None:
    with RunReader(folder) as reader:
        assert reader.status() == "finished"
        assert len(reader.logged_steps()) > 0
        assert reader.meta.get("integration") == integration


def test_lightning_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    train_loader, val_loader = loaders()
    exec(example("lightning"), {"lightning": lightning, "model": Classifier(), "train_loader": train_loader,
                                "val_loader": val_loader})
    assert_recorded(only_run(tmp_path / "logs"), "lightning")


def test_transformers_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), num_train_epochs=1, per_device_train_batch_size=4,
                             save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    exec(example("transformers"), {"Trainer": Trainer, "model": model, "args": args, "train_data": Tokens()})
    assert_recorded(only_run(tmp_path / "logs"), "transformers")


def test_manual_update_example_runs_exactly_as_printed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StepNotSeenWarning)  # run.step() marks every step
        exec(compile(example("manual"), "README.md:manual", "exec"), {"__name__": "__main__"})
    with RunReader(only_run(tmp_path / "logs")) as reader:
        assert reader.status() == "finished"
        assert reader.logged_steps().tolist() == [0, 10]


def test_plain_loop_example_runs_exactly_as_printed(tmp_path, monkeypatch):
    """The first snippet a newcomer pastes: nothing defined beforehand, nothing injected."""
    monkeypatch.chdir(tmp_path)
    exec(compile(example("plain-loop"), "README.md:plain-loop", "exec"), {"__name__": "__main__"})
    folder = only_run(tmp_path / "logs")
    with RunReader(folder) as reader:
        assert reader.status() == "finished"
        assert reader.meta["config"] == {"lr": 1e-3}
        assert reader.logged_steps().tolist() == [0, 10, 20, 30, 40]  # 3 epochs x 16 batches, every 10th
        assert reader.scalar_series("train_loss")["step"].tolist() == list(range(48))  # from step 0
        assert reader.scalar_series("epoch")["step"].tolist() == [15, 31, 47]
        assert len(reader.scalar_series("val_loss")) == 3


def test_every_python_snippet_in_the_readme_is_a_tested_example():
    """A snippet without a test is a snippet that can rot: each is marked and run by a test here."""
    text = README.read_text()
    blocks = re.findall(r"(<!-- example: ([\w-]+) -->\s*)?```python\n", text)
    tested = {"plain-loop", "manual", "lightning", "transformers"}
    assert [name for _, name in blocks] == [name for _, name in blocks if name in tested], blocks
    assert {name for _, name in blocks} == tested
