"""One rank of a transformers Trainer run under torchrun (2 CPU processes, gloo DDP) with
gradwatch's callback, for tests/integrations/test_transformers_ddp.py.

usage: torchrun --nproc_per_node 2 hf_ddp_worker.py LOGDIR OUT_JSON
Writes OUT_JSON.rank<N>: the rank, world size, whether its callback opened a run, and the
gradients the optimizer steps with (after DDP's all-reduce) under the step number HF logs.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from gradwatch.integrations.transformers import GradwatchCallback  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=16, length=12, vocab=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Report(TrainerCallback):
    def __init__(self, model, gradwatch):
        self.model, self.gradwatch, self.grads, self.has_run = model, gradwatch, {}, None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.has_run is None:
            self.has_run = self.gradwatch.run is not None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.grads[state.global_step + 1] = {n: p.grad.detach().double().norm().item()
                                             for n, p in self.model.named_parameters() if p.grad is not None}


def main() -> None:
    logdir, out_json = sys.argv[1:3]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=str(Path(logdir).parent / "hf"), num_train_epochs=2, per_device_train_batch_size=4,
        learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, ddp_backend="gloo",
        disable_tqdm=True,
    )
    gradwatch = GradwatchCallback(logdir=logdir, name="gpt2-ddp", every=1)
    report = Report(model, gradwatch)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[gradwatch, report])
    trainer.train()
    Path(f"{out_json}.rank{args.process_index}").write_text(json.dumps({
        "rank": args.process_index, "world_size": args.world_size, "has_run": report.has_run,
        "grads": report.grads, "global_step": trainer.state.global_step,
    }))


if __name__ == "__main__":
    main()
