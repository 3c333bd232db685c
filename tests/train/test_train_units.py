"""Training-loop pieces without a run: early stopping, L1/L2 vs weight decay, optimizer choice,
metrics, batching, device choice."""


import numpy as np
import pytest
import torch
from torch import nn

from gradwatch.trainer.options import OptionsError, validate
from gradwatch.trainer.train import EarlyStopping, build_optimizer, penalised_weights, resolve_device, weight_penalty
from gradwatch.trainer.train.loop import batch_slices
from gradwatch.trainer.train.metrics import classification_report, confusion_matrix


# ---- early stopping ---------------------------------------------------------------------------
def _fake_model(value: float) -> nn.Module:
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_early_stopping_stops_after_patience_and_restores_best():
    losses = [1.0, 0.8, 0.6, 0.65, 0.7, 0.61, 0.9]  # best at epoch 3
    stopper = EarlyStopping(patience=3)
    model = _fake_model(0.0)
    stopped_at = None
    for epoch, loss in enumerate(losses, 1):
        with torch.no_grad():
            model.weight.fill_(epoch)  # the weights "of" each epoch
        if stopper.update(epoch, loss, model):
            stopped_at = epoch
            break
    assert stopper.best_epoch == 3 and stopper.best_loss == 0.6
    assert stopped_at == 6 == stopper.stopped_epoch  # 3 evaluations without improvement
    assert stopper.restore(model)
    assert model.weight.item() == 3.0


def test_early_stopping_min_delta_and_patience_zero():
    stopper = EarlyStopping(patience=1, min_delta=0.1)
    assert not stopper.update(1, 1.0)
    assert stopper.update(2, 0.95)  # improves by less than min_delta: does not count
    assert stopper.best_epoch == 1
    stopper = EarlyStopping(patience=0)
    assert not stopper.update(1, 1.0)
    assert not stopper.update(2, 0.9)
    assert stopper.update(3, 0.9)


def test_early_stopping_nan_never_improves_and_no_best_without_model():
    stopper = EarlyStopping(patience=2)
    assert not stopper.update(1, float("nan"))
    assert stopper.update(2, float("nan"))
    assert stopper.best_epoch is None and not stopper.restore(_fake_model(1.0))
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)


# ---- L1 / L2 / weight decay ---------------------------------------------------------------------
def _two_layer() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_penalties_cover_weight_matrices_only():
    model = _two_layer()
    weights = penalised_weights(model)
    assert [tuple(w.shape) for w in weights] == [(4, 3), (2, 4)]  # no biases, no BatchNorm
    l1 = sum(w.abs().sum() for w in weights).item()
    l2 = sum(w.pow(2).sum() for w in weights).item()
    assert weight_penalty(weights, 0.0, 0.0) is None
    assert weight_penalty(weights, 0.01, 0.0).item() == pytest.approx(0.01 * l1, rel=1e-5)
    assert weight_penalty(weights, 0.0, 0.1).item() == pytest.approx(0.1 * l2, rel=1e-5)
    assert weight_penalty(weights, 0.01, 0.1).item() == pytest.approx(0.01 * l1 + 0.1 * l2, rel=1e-5)


def test_l1_gradient_is_sign_and_l2_gradient_is_twice_the_weight():
    model = _two_layer()
    weights = penalised_weights(model)
    weight_penalty(weights, 0.5, 0.0).backward()
    assert torch.allclose(weights[0].grad, 0.5 * weights[0].sign())
    model.zero_grad()
    weight_penalty(weights, 0.0, 0.5).backward()
    assert torch.allclose(weights[0].grad, 2 * 0.5 * weights[0].detach())


def _options(**overrides) -> dict:
    return validate({"dataset": "circles", **overrides})


def test_optimizer_choice_and_decay_groups():
    model = _two_layer()
    assert type(build_optimizer(model, _options(optimizer="adam"))) is torch.optim.Adam
    adamw = build_optimizer(model, _options(optimizer="adam", weight_decay=0.1))
    assert type(adamw) is torch.optim.AdamW
    decays = sorted((g["weight_decay"], len(g["params"])) for g in adamw.param_groups)
    assert decays == [(0.0, 4), (0.1, 2)]  # biases and BatchNorm are not decayed
    sgd = build_optimizer(model, _options(optimizer="sgd", momentum=0.5, lr=0.2))
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.5


def _step(model: nn.Module, options: dict, l2: float = 0.0, zero_data_grad: bool = False) -> list[torch.Tensor]:
    optimizer = build_optimizer(model, options)
    optimizer.zero_grad()
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    loss = model(x).pow(2).mean() * (0.0 if zero_data_grad else 1.0)
    penalty = weight_penalty(penalised_weights(model), 0.0, l2)
    (loss if penalty is None else loss + penalty).backward()
    optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def test_adamw_decay_is_decoupled_from_the_gradient():
    # No data gradient: AdamW shrinks each weight by exactly lr * weight_decay * w ...
    model = _two_layer()
    before = [p.detach().clone() for p in model.parameters()]
    after = _step(model, _options(optimizer="adam", lr=0.1, weight_decay=0.5), zero_data_grad=True)
    assert torch.allclose(after[0], before[0] * (1 - 0.1 * 0.5))
    assert torch.equal(after[1], before[1])  # bias: not decayed
    # ... while an L2 term in the loss goes through Adam's normalisation: every weight moves by ~lr.
    model = _two_layer()
    after_l2 = _step(model, _options(optimizer="adam", lr=0.1), l2=0.5, zero_data_grad=True)
    moved = (before[0] - after_l2[0]).abs()
    assert torch.allclose(moved, torch.full_like(moved, 0.1), rtol=1e-3)


def test_sgd_weight_decay_equals_an_l2_term_of_half_the_coefficient():
    decay = _step(_two_layer(), _options(optimizer="sgd", lr=0.1, weight_decay=0.2))
    l2_term = _step(_two_layer(), _options(optimizer="sgd", lr=0.1), l2=0.1)
    for a, b in zip(decay, l2_term):
        assert torch.allclose(a, b, atol=1e-6)


# ---- metrics, batching, devices ------------------------------------------------------------
def test_classification_report():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    report = classification_report(y_true, y_pred, ["neg", "neu", "pos"])
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    f1 = [2 * 1 / (2 + 2), 2 * 2 / (3 + 2), 2 * 1 / (1 + 2)]
    assert report["macro_f1"] == pytest.approx(np.mean(f1))
    assert report["class_names"] == ["neg", "neu", "pos"]
    assert confusion_matrix(np.array([2]), np.array([2]), 3)[2, 2] == 1


def test_batches_drop_a_single_example_only_with_batchnorm():
    assert [s.stop - s.start for s in batch_slices(9, 4, drop_single=False)] == [4, 4, 1]
    assert [s.stop - s.start for s in batch_slices(9, 4, drop_single=True)] == [4, 4]
    assert [s.stop - s.start for s in batch_slices(10, 4, drop_single=True)] == [4, 4, 2]


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(OptionsError, match="CUDA is not available"):
            resolve_device("cuda")
