"""Flag cards show remedies that fit the user's code: the code change on a run of the user's own
loop, "try it" Launch links on a run from a lesson preset; the optimizer's recorded lr is charted."""

from __future__ import annotations

from gradwatch.dashboard import components, figures
from gradwatch.trainer.runlog import schema

FLAG = {"rule": "exploding_gradient", "severity": "critical", "layers": ["rnn"], "first_step": 4, "last_step": 48,
        "evidence": {}, "explanation": "Exploding gradients.", "remedy_ids": ["clipping", "lower-lr"],
        "remedies": ["Clip the gradient norm.", "Lower the learning rate."],
        "remedy_code": ["torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
                        "optimizer = torch.optim.SGD(model.parameters(), lr=6.67)"]}


def texts(node) -> list:
    """Every string and every Link/Pre element below a Dash component, depth first."""
    out = []
    if isinstance(node, str):
        return [node]
    if isinstance(node, (list, tuple)):
        for child in node:
            out += texts(child)
        return out
    if node is None or not hasattr(node, "children"):
        return out
    out.append(node)
    return out + texts(node.children)


def test_a_users_own_run_gets_the_code_change_not_a_preset_link():
    card = components.flag_card(FLAG, 0, {"lr": 20.0})
    found = texts(card)
    assert "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)" in found
    assert not [n for n in found if type(n).__name__ == "Link"]


def test_a_lesson_preset_run_gets_launch_links_and_no_code():
    card = components.flag_card(FLAG, 0, {"preset": "exploding", "lr": 0.05})
    found = texts(card)
    assert "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)" not in found
    links = [n for n in found if type(n).__name__ == "Link"]
    assert [link.href for link in links] == ["/launch?preset=clipping", "/launch?preset=exploding&lr=0.0167"]


def test_the_optimizers_lr_is_charted_with_its_name():
    series = {schema.OPTIMIZER_LR: {"steps": [0, 10], "values": [0.1, 0.01], "bad_steps": []}}
    fig = figures.signals_chart(series)
    assert [a.text for a in fig.layout.annotations][0] == "learning rate (from the optimizer)"
