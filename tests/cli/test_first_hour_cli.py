"""The command line as a newcomer meets it: `inspect` keeps long layer names apart, `diagnose --json |
head` ends quietly, `train --help` lists the valid values of its choice options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gradwatch import cli
from gradwatch.testing import make_run
from gradwatch.trainer.inspect_run import format_summary, summarize_run
from gradwatch.trainer.run import Run

ROOT = Path(__file__).resolve().parents[2]


def test_inspect_keeps_long_layer_names_apart(tmp_path):
    """BERT's query, key and value differ only after character 32: they were three identical rows."""

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.query(x) + self.key(x) + self.value(x)

    model = nn.Module()
    model.bert = nn.Module()
    model.bert.encoder = nn.ModuleList([nn.Module() for _ in range(2)])
    for block in model.bert.encoder:
        block.attention = nn.Module()
        block.attention.self = SelfAttention()
    model.forward = lambda x: model.bert.encoder[1].attention.self(model.bert.encoder[0].attention.self(x))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Run(tmp_path, name="bert-names") as run:
        run.watch(model, every=1)
        for _ in range(2):
            model(torch.randn(3, 4)).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    text = format_summary(summarize_run(run.path))
    layer_rows = [line.split()[0] for line in text.splitlines() if line.startswith("bert.")]
    assert len(layer_rows) == 6 and len(set(layer_rows)) == 6, text
    assert "bert.encoder.1.attention.self.value" in layer_rows


def test_diagnose_json_into_a_closed_pipe_ends_quietly(tmp_path):
    folder = make_run(tmp_path, "exploding", steps=120, pathology="exploding")
    proc = subprocess.Popen([sys.executable, "-m", "gradwatch", "diagnose", str(folder), "--json"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head` that has read what it wanted (here: nothing) and gone
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == "" and proc.returncode == 0, err


def test_train_help_lists_the_valid_values(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for values in ("{relu,sigmoid,tanh}", "{adam,sgd}", "{default,xavier,kaiming,normal}"):
        assert values in out
