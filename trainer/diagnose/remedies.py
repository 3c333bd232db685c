"""Remedies checked against the run: none it already applies, none that does not fit its architecture
or contradicts what else is wrong, most relevant first, each with the code change for the user's stack.

The rules name remedies from their own evidence; `fit_remedies` then looks at the whole run once:
- already applied: clipping when the run clips (config clip_norm & co., meta "grad_clip", a logged
  grad_norm_clipped); an LSTM for a gated or attention network; weight decay / dropout when set;
  ReLU when the hidden activation already is one;
- does not fit: ReLU and batch norm for LSTMs/GRUs and transformers (their gates and residual,
  layer-normalised paths are not what a sigmoid MLP lacks), batch norm for a plain RNN;
- contradicted: "raise the learning rate" while the loss diverges, gradients explode or the
  learning rate is flagged too high;
- order: "lower the learning rate" first when the learning rate is also flagged too high, "raise"
  first for underfitting when it is flagged too low.
`remedy_code` gives each remedy's code change for a plain PyTorch loop, a Lightning Trainer or an HF
Trainer (meta "integration": "lightning" / "transformers"; absent means a plain loop).
"""

from __future__ import annotations

from .data import RunData
from .flags import REMEDIES, Flag

INTEGRATIONS = ("torch", "lightning", "transformers")
RELU_FAMILY = ("relu", "relu6", "leakyrelu", "leaky_relu", "elu", "gelu", "selu", "silu", "mish")
DIVERGENCE_RULES = ("loss_divergence", "exploding_gradient", "nonfinite")
ACTIVE = ("critical", "warning")

# {remedy id: {integration: code}}; "torch" is the fallback for every stack.
REMEDY_CODE: dict[str, dict[str, str]] = {
    "clipping": {
        "torch": "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # after loss.backward(), before optimizer.step()",
        "lightning": "trainer = Trainer(gradient_clip_val=1.0)",
        "transformers": "args = TrainingArguments(..., max_grad_norm=1.0)",
    },
    "lower-lr": {
        "torch": "optimizer = {optimizer_module}.{optimizer}(model.parameters(), lr={lower_lr}{optimizer_args})",
        "lightning": ("return {optimizer_module}.{optimizer}(self.parameters(), lr={lower_lr}{optimizer_args})"
                      "  # in configure_optimizers"),
        "transformers": "args = TrainingArguments(..., learning_rate={lower_lr})",
    },
    "higher-lr": {
        "torch": "optimizer = {optimizer_module}.{optimizer}(model.parameters(), lr={higher_lr}{optimizer_args})",
        "lightning": ("return {optimizer_module}.{optimizer}(self.parameters(), lr={higher_lr}{optimizer_args})"
                      "  # in configure_optimizers"),
        "transformers": "args = TrainingArguments(..., learning_rate={higher_lr})",
    },
    "init": {
        "torch": ("for m in model.modules():\n    if isinstance(m, nn.Linear):\n"
                  "        nn.init.{init_fn}(m.weight{init_arg})\n"
                  "        if m.bias is not None:\n            nn.init.zeros_(m.bias)"),
        "transformers": "config = {config_class}(..., initializer_range=0.02)  # then build the model from it",
    },
    "relu": {"torch": "nn.ReLU()  # in place of nn.Sigmoid() / nn.Tanh() in the hidden layers"},
    "leaky-relu": {"torch": "nn.LeakyReLU(0.01)  # in place of nn.ReLU()"},
    "batchnorm": {"torch": "nn.BatchNorm1d(width)  # after each hidden nn.Linear (nn.BatchNorm2d after a Conv2d)"},
    "lstm": {"torch": "nn.LSTM(input_size, hidden_size, batch_first=True)  # in place of nn.RNN"},
    "dropout": {
        "torch": "nn.Dropout(p=0.3)  # between hidden layers",
        "transformers": "config = {config_class}(..., {dropout_key}=0.2)  # then build the model from it",
    },
    "l2": {
        "torch": "optimizer = torch.optim.AdamW(model.parameters(), lr={lr}, weight_decay=0.01)",
        "lightning": "return torch.optim.AdamW(self.parameters(), lr={lr}, weight_decay=0.01)  # in configure_optimizers",
        "transformers": "args = TrainingArguments(..., weight_decay=0.01)",
    },
    "l1": {"torch": "loss = loss + 1e-5 * sum(p.abs().sum() for p in model.parameters())"},
    "qk-norm": {"torch": ("q, k = self.q_norm(q), self.k_norm(k)  # self.q_norm = nn.LayerNorm(head_dim), "
                          "self.k_norm likewise, before scaled_dot_product_attention")},
    "gate-bias": {"torch": ("for m in model.modules():\n    if isinstance(m, nn.LSTM):\n"
                            "        for name, b in m.named_parameters():\n"
                            "            if name.startswith(\"bias\"):\n"
                            "                with torch.no_grad():\n"
                            "                    b[m.hidden_size:2 * m.hidden_size].fill_(0.5)  # forget gate: ih + hh = 1")},
    "adam-beta2": {
        "torch": "optimizer = torch.optim.{optimizer}(model.parameters(), lr={lr}, betas=(0.9, 0.95), eps=1e-8)",
        "transformers": "args = TrainingArguments(..., adam_beta2=0.95)",
    },
    "z-loss": {"torch": "loss = loss + 1e-4 * torch.logsumexp(logits, dim=-1).pow(2).mean()"},
    "warmup": {
        "torch": "scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=1000)",
        "transformers": "args = TrainingArguments(..., warmup_steps=1000)",
    },
    "zero-grad": {
        "torch": "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # a max_norm of 0 zeroes every gradient",
        "lightning": "trainer = Trainer(gradient_clip_val=1.0)  # 0 zeroes every gradient",
        "transformers": "args = TrainingArguments(..., max_grad_norm=1.0)  # 0 zeroes every gradient",
    },
    "less-regularisation": {
        "torch": "optimizer = torch.optim.{optimizer}(model.parameters(), lr={lr}, weight_decay={lower_wd})",
        "lightning": "return torch.optim.{optimizer}(self.parameters(), lr={lr}, weight_decay={lower_wd})",
        "transformers": "args = TrainingArguments(..., weight_decay={lower_wd})",
    },
    "early-stopping": {
        "torch": ("if val_loss < best_val_loss:\n    best_val_loss = val_loss\n"
                  "    torch.save(model.state_dict(), \"best.pt\")"),
        "lightning": "trainer = Trainer(callbacks=[EarlyStopping(monitor=\"val_loss\", patience=3)])",
        "transformers": ("trainer = Trainer(..., callbacks=[EarlyStoppingCallback(early_stopping_patience=3)])"
                         "  # with TrainingArguments(load_best_model_at_end=True)"),
    },
}


def integration_of(data: RunData) -> str:
    value = str(data.meta.get("integration") or "").lower()
    return value if value in INTEGRATIONS else "torch"


def remedy_code(remedy_id: str, data: RunData) -> str:
    """The code change for `remedy_id` in this run's stack ("" where no single change fits)."""
    options = REMEDY_CODE.get(remedy_id)
    if not options:
        return ""
    template = options.get(integration_of(data), options["torch"])
    recorded = data.lr_series()
    # The lr the user wrote is the peak of any schedule (warmup rises to it, decay falls from it).
    lr = _number(recorded.max() if len(recorded) else data.config_value("lr", "learning_rate"))
    activation = data.activation_name() or ""
    saturating = activation in ("sigmoid", "tanh")
    optimizer_class, optimizer_module, optimizer_args = _optimizer(data)
    values = {
        "optimizer": optimizer_class,
        "optimizer_module": optimizer_module,
        "optimizer_args": optimizer_args,
        "config_class": _config_class(data),
        "dropout_key": _dropout_key(data),
        "lr": _lr_text(lr if lr is not None else 1e-3),
        "lower_lr": _lr_text(lr / 3) if lr else "1e-4",
        "higher_lr": _lr_text(lr * 3) if lr else "3e-3",
        "lower_wd": _lr_text((data.weight_decay() or 0.1) / 100),
        "init_fn": "xavier_uniform_" if saturating else "kaiming_normal_",
        "init_arg": f", gain=nn.init.calculate_gain(\"{activation}\")" if saturating else ", nonlinearity=\"relu\"",
    }
    if remedy_id == "init" and integration_of(data) == "transformers" and not values["config_class"]:
        return "model.config.initializer_range = 0.02; model.init_weights()  # re-initialise from the config"
    if remedy_id == "dropout" and integration_of(data) == "transformers" and not values["config_class"]:
        return ""
    if remedy_id == "zero-grad" and data.clip_setting() != 0:
        return ""  # the cause is in the user's code (no_grad, detach, frozen): no one-line change
    if remedy_id in ("lower-lr", "higher-lr") and _one_cycle(data) and integration_of(data) != "transformers":
        # A OneCycle schedule sets the lr from its max_lr at every step: the optimizer's lr= is ignored.
        target = values["lower_lr"] if remedy_id == "lower-lr" else values["higher_lr"]
        return f"scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr={target}, ...)  # your other arguments"
    return template.format(**values)


def fit_remedies(flags: list[Flag], data: RunData) -> list[Flag]:
    """Drop remedies the run applies or that do not fit it, reorder by the other findings, and
    attach each remaining remedy's code change. Changes the flags in place and returns them."""
    active = [f for f in flags if f.severity in ACTIVE]
    diverging = any(f.rule in DIVERGENCE_RULES for f in active)
    lr_high = any(f.rule == "learning_rate" and f.evidence.get("direction") == 1 for f in active)
    lr_low = any(f.rule == "learning_rate" and f.evidence.get("direction") == -1 for f in active)
    unfit = _unfit(data)
    if diverging or lr_high or any(f.rule == "zero_gradients" for f in active):
        unfit.add("higher-lr")  # lr x a zero gradient is still zero
    for flag in flags:
        ids = [r for r in flag.remedy_ids if r not in unfit]
        if lr_high and "lower-lr" in ids and flag.rule != "learning_rate":
            ids.remove("lower-lr")
            ids.insert(0, "lower-lr")
        if lr_low and flag.rule == "underfitting" and "higher-lr" in ids:
            ids.remove("higher-lr")
            ids.insert(0, "higher-lr")
        flag.remedy_ids = ids
        flag.remedy_code = [remedy_code(r, data) for r in ids]
        for told in flag.absorbed:  # the findings a cause-chain card tells: the same fit
            kept = [r for r in told.get("remedy_ids") or [] if r not in unfit]
            told.update(remedy_ids=kept, remedies=[REMEDIES[r] for r in kept],
                        remedy_code=[remedy_code(r, data) for r in kept])
    return flags


def _unfit(data: RunData) -> set[str]:
    """Remedy ids this run already applies or that do not fit its architecture."""
    unfit: set[str] = set()
    if data.clips_gradients():
        unfit.add("clipping")
    architecture = data.architecture
    if architecture in ("gated-rnn", "transformer"):
        unfit |= {"relu", "batchnorm", "lstm", "leaky-relu"}
    elif architecture == "rnn":
        unfit.add("batchnorm")
    else:
        unfit.add("lstm")
    if any(t.startswith("BatchNorm") for t in data.module_types.values()):
        unfit.add("batchnorm")
    activation = data.activation_name() or ""
    if activation.replace("_", "") in RELU_FAMILY and architecture in ("mlp", "cnn"):
        unfit.add("relu")
    if (_number(data.config_value("weight_decay", "l2")) or 0) > 0:
        unfit.add("l2")
    return unfit


TORCH_OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
# Hyperparameters kept in the rewritten constructor when they differ from torch's defaults.
KEPT_DEFAULTS = {"momentum": 0, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": None, "nesterov": False,
                 "alpha": 0.99}


def _optimizer(data: RunData) -> tuple[str, str, str]:
    """(class, module path, extra keyword arguments) of the run's optimizer: the one the capture
    recorded (meta "optimizer"), else config "optimizer", else SGD."""
    recorded = data.meta.get("optimizer")
    if isinstance(recorded, dict) and recorded.get("class"):
        cls = str(recorded["class"])
        module = str(recorded.get("module") or "torch.optim")
        module = "torch.optim" if module.startswith("torch.optim") else module
        groups = recorded.get("param_groups") or [{}]
        group = groups[0] if isinstance(groups[0], dict) else {}
        args = []
        for key, default in KEPT_DEFAULTS.items():
            value = group.get(key)
            if value is None or value == default or (key == "weight_decay" and cls == "AdamW" and value == 0.01):
                continue
            if key == "weight_decay" and not value:
                continue
            text = f"({value[0]:g}, {value[1]:g})" if isinstance(value, list) and len(value) == 2 else (
                repr(value) if isinstance(value, bool) else f"{value:g}")
            args.append(f", {key}={text}")
        return cls, module, "".join(args)
    name = str(data.config_value("optimizer", "optim", default="") or "").lower()
    return TORCH_OPTIMIZERS.get(name, "SGD"), "torch.optim", ""


def _one_cycle(data: RunData) -> bool:
    recorded = data.meta.get("optimizer")
    groups = recorded.get("param_groups") if isinstance(recorded, dict) else None
    return bool(groups) and isinstance(groups[0], dict) and "max_lr" in groups[0] and "min_lr" in groups[0]


def _config_class(data: RunData) -> str:
    """The HF model's config class (meta "model_config"), else AutoConfig."""
    model_config = data.meta.get("model_config")
    if isinstance(model_config, dict) and model_config.get("config_class"):
        return str(model_config["config_class"])
    return ""


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def _lr_text(value: float) -> str:
    return f"{value:.3g}"


def _dropout_key(data: RunData) -> str:
    """The HF config's dropout field: GPT-2-style configs call it resid_pdrop, BERT-style hidden_dropout_prob."""
    model_config = data.meta.get("model_config")
    model_type = str(model_config.get("model_type", "")) if isinstance(model_config, dict) else ""
    return "resid_pdrop" if model_type in ("gpt2", "openai-gpt", "gpt_neo", "gptj", "codegen") else "hidden_dropout_prob"

