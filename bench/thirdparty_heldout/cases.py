"""The held-out cases: third-party training code, each run healthy or with a fault injected the way
users meet it (a learning rate far too high, no clipping, a bias initialised far below zero, a
sigmoid stack, a tiny noisy training set, a library default lr on a randomly initialised model).

What a case *intends* is only a note: the truth it is scored against is measured by the oracle
(bench/thirdparty_heldout/oracle.py) on the run itself. A case lists the remedies its code already
applies (`applies`: suggesting them is harmful - "clip" to a run that clips) and whether it is a
sequence model (no ReLU / batch norm / LSTM swap fits an LSTM or a transformer).

Never tune a diagnosis rule while looking at these cases' results: they are the held-out set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class HeldoutCase:
    id: str
    codebase: str  # the module of bench/thirdparty_heldout that trains it
    intent: str  # healthy | divergence | vanishing | dead_units | overfitting | underfitting (a note)
    options: dict = field(default_factory=dict)
    applies: tuple[str, ...] = ()  # remedies the run's code already applies
    sequence_model: bool = False
    quick: bool = False  # in the --quick smoke set
    seed_offset: int = 0  # added to the codebase's own seed
    note: str = ""


NANOGPT_APPLIES = ("clipping", "l2")  # grad_clip 1.0, weight_decay 0.1
BERT_APPLIES = ("clipping",)  # Trainer's max_grad_norm 1.0
RESNET_APPLIES = ("batchnorm", "relu", "l2")
AE = dict(module="autoencoder", hidden_dim=64)

CASES: tuple[HeldoutCase, ...] = (
    # ---- nanoGPT -----------------------------------------------------------------------------------
    HeldoutCase("nanogpt-healthy", "nanogpt", "healthy", {}, NANOGPT_APPLIES, True,
                note="shakespeare_char recipe: AdamW 1e-3, warmup 10, cosine, clip 1.0"),
    HeldoutCase("nanogpt-lr-high", "nanogpt", "divergence", dict(learning_rate=1.0, grad_clip=0.0, decay_lr=False),
                ("l2",), True, note="learning_rate=1.0, grad_clip=0, decay_lr=False"),
    HeldoutCase("nanogpt-overfit", "nanogpt", "overfitting",
                dict(n_chars=1000, max_iters=400, lr_decay_iters=400, n_embd=64), NANOGPT_APPLIES, True,
                note="1,000 characters of text, 400 iterations"),
    # ---- pytorch/examples mnist -------------------------------------------------------------------
    HeldoutCase("mnist-healthy", "mnist", "healthy", {}, ("relu", "dropout"),
                note="Adadelta lr 1.0, StepLR gamma 0.7"),
    HeldoutCase("mnist-dead-relu", "mnist", "dead_units", dict(hidden_bias=-2.0), ("relu", "dropout"), quick=True,
                note="conv1/conv2/fc1 biases initialised to -2 (functional F.relu)"),
    HeldoutCase("mnist-lr-high", "mnist", "divergence", dict(lr=50.0), ("relu", "dropout"),
                note="Adadelta at lr 50"),
    HeldoutCase("mnist-lr-tiny", "mnist", "underfitting", dict(lr=1e-3), ("relu", "dropout"),
                note="Adadelta at lr 1e-3 (an Adam-sized lr)"),
    # ---- pytorch/examples time_sequence_prediction -----------------------------------------------
    HeldoutCase("sine-lstm-healthy", "sine_lstm", "healthy", {}, ("lstm",), True,
                note="LSTMCell x2 in float64, L-BFGS lr 0.8"),
    HeldoutCase("sine-lstm-sgd-lr-high", "sine_lstm", "divergence", dict(optimizer="sgd", lr=5.0, steps=30, every=5),
                ("lstm",), True, note="SGD at lr 5 instead of L-BFGS, no clipping"),
    # ---- transformers BERT + Trainer ---------------------------------------------------------------
    HeldoutCase("hf-bert-healthy", "hf_bert", "healthy", {}, BERT_APPLIES, True, note="lr 3e-3, 5 epochs"),
    HeldoutCase("hf-bert-lr-high", "hf_bert", "divergence", dict(learning_rate=0.5), BERT_APPLIES, True,
                note="lr 0.5 (max_grad_norm 1.0 still on)"),
    HeldoutCase("hf-bert-default-lr", "hf_bert", "underfitting", dict(learning_rate=5e-5), BERT_APPLIES, True,
                note="Trainer's default lr 5e-5 on a randomly initialised model"),
    # ---- Lightning examples -------------------------------------------------------------------------
    HeldoutCase("lightning-classifier-healthy", "lightning_examples", "healthy", {}, ("relu",),
                note="LitClassifier(Backbone), Adam 1e-3"),
    HeldoutCase("lightning-classifier-example-lr", "lightning_examples", "healthy", dict(learning_rate=1e-4),
                ("relu",), note="LitClassifier at the example's own default lr 1e-4"),
    HeldoutCase("lightning-classifier-lr-high", "lightning_examples", "divergence", dict(learning_rate=1.0),
                ("relu",), note="LitClassifier, Adam at lr 1.0"),
    HeldoutCase("lightning-ae-healthy", "lightning_examples", "healthy", dict(AE, learning_rate=1e-3, epochs=6),
                ("relu",), quick=True, note="LitAutoEncoder, Adam 1e-3"),
    HeldoutCase("lightning-ae-dead-relu", "lightning_examples", "dead_units",
                dict(AE, learning_rate=1e-2, encoder_bias=-3.0), ("relu",),
                note="LitAutoEncoder, encoder hidden bias initialised to -3"),
    HeldoutCase("lightning-ae-deep-sigmoid", "lightning_examples", "vanishing",
                dict(AE, learning_rate=1e-2, activation="sigmoid", depth=6),
                note="LitAutoEncoder with 6 sigmoid hidden layers each side"),
    # ---- timm-style ResNet ----------------------------------------------------------------------------
    HeldoutCase("resnet-healthy", "resnet", "healthy", {}, RESNET_APPLIES,
                note="SGD Nesterov 0.1, wd 5e-4, cosine, zero-init last BN"),
    HeldoutCase("resnet-lr-high", "resnet", "divergence", dict(lr=10.0), RESNET_APPLIES, note="SGD lr 10"),
    HeldoutCase("resnet-overfit", "resnet", "overfitting",
                dict(train_size=96, label_noise=0.2, image_noise=1.0, epochs=60), RESNET_APPLIES,
                note="96 noisy images, 20% wrong labels, 60 epochs"),
)
CASE_IDS = tuple(case.id for case in CASES)


def get_case(case_id: str) -> HeldoutCase:
    """A case by id; `ID-sK` is case ID run with seed offset K (another initialisation, batch order and,
    where the case generates it, another draw of the data)."""
    base, _, offset = case_id.rpartition("-s")
    if base in CASE_IDS and offset.isdigit():
        return with_seed(get_case(base), int(offset))
    for case in CASES:
        if case.id == case_id:
            return case
    raise KeyError(f"unknown held-out case {case_id!r}; known: {', '.join(CASE_IDS)} (add -sK for seed offset K)")


def with_seed(case: HeldoutCase, offset: int) -> HeldoutCase:
    if not offset:
        return case
    return replace(case, id=f"{case.id}-s{offset}", seed_offset=offset)
