"""NaN or Inf in the loss, gradients, weights or activations: where it first appeared."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..runlog import schema
from .data import RunData
from .flags import Flag, layer_list
from .rule import Rule

# Within one step the forward pass runs first, then the backward pass, then the update that the
# weight statistics describe: the earliest kind in this order is where the value first went bad.
CAUSAL_ORDER = ("activation", "grad", "weight")


def _is_watched_scalar(name: str) -> bool:
    return name.endswith("loss") or name.startswith("grad_norm") or name == schema.SENTINEL_GRAD_NORM


# How a sentence names a scalar that went bad.
SCALAR_WORDS = {
    schema.SENTINEL_GRAD_NORM: "the gradient norm (every-step sentinel)",
    schema.SENTINEL_NONFINITE: "a gradient (every-step sentinel)",
}


@dataclass
class NonFinite(Rule):
    """Any NaN or Inf in the losses, the gradient norms, or a layer's gradients, weights or
    activations (SageMaker Debugger's ExplodingTensor with only_nan=False; AUTOTRAINER's
    nan_loss / nan_gradient / nan_weight checks). Always critical: training cannot recover.

    Reports the first step and, at that step, the layers affected in forward order, looking first at
    activations (the forward pass), then gradients, then weights - so `layers[0]` is the earliest
    layer where the value went bad.
    """

    rule = "nonfinite"
    title = "NaN / Inf"

    def skip_reason(self, data: RunData) -> str | None:
        if not data.has_records:
            return "no records"
        return None

    def check(self, data: RunData) -> list[Flag]:
        rows = data.views.nonfinite
        scalar_hits = self._scalar_hits(data)
        all_steps = set(rows["step"].tolist()) | set(scalar_hits["step"].tolist())
        if not all_steps:
            return []
        first_step, last_step = int(min(all_steps)), int(max(all_steps))

        at_first = rows[rows["step"] == first_step]
        layers: list[str] = []
        kind = None
        for candidate in CAUSAL_ORDER:
            hit = at_first[at_first["kind"] == candidate]
            if len(hit):
                kind = candidate
                layers = sorted(pd.unique(hit["layer"]), key=data.position)
                break
        scalars_first = [SCALAR_WORDS.get(name, name)
                         for name in scalar_hits[scalar_hits["step"] == first_step]["name"].tolist()]

        evidence = {
            "first_step": first_step,
            "nan_count_first_step": int(at_first["nan_count"].sum()),
            "inf_count_first_step": int(at_first["inf_count"].sum()),
            "layers_affected_first_step": int(at_first["layer"].nunique()),
            "steps_nonfinite": len(all_steps),
        }
        loss = scalar_hits[scalar_hits["name"] == "train_loss"]
        if len(loss):
            evidence["loss_nonfinite_step"] = int(loss["step"].min())

        what = {"activation": "activations", "grad": "gradients", "weight": "weights"}.get(kind, "")
        if layers:
            sentence = (
                f"NaN/Inf values first appeared at step {first_step} in the {what} of {layers[0]}"
                + (f" (also {layer_list(layers[1:])})" if len(layers) > 1 else "")
            )
            if scalars_first:
                sentence += f"; {', '.join(scalars_first)} became NaN/Inf at the same step"
            elif "loss_nonfinite_step" in evidence:
                sentence += f"; the training loss became NaN/Inf at step {evidence['loss_nonfinite_step']}"
        else:
            sentence = f"{', '.join(scalars_first)} became NaN/Inf at step {first_step}"
        sentence += "; training cannot recover from here."
        return [
            Flag(
                rule=self.rule,
                severity="critical",
                layers=layers,
                first_step=first_step,
                last_step=last_step,
                evidence=evidence,
                explanation=sentence,
                remedy_ids=["lower-lr", "clipping", "batchnorm", "init"],
            )
        ]

    @staticmethod
    def _scalar_hits(data: RunData) -> pd.DataFrame:
        """(step, name) of every non-finite loss or gradient-norm scalar."""
        hits = []
        for name in data.scalar_names:
            if _is_watched_scalar(name) or name == schema.SENTINEL_NONFINITE:
                series = data.scalar(name)
                values = series.to_numpy(dtype=float)
                # The sentinel count is a number of non-finite gradients: any above zero is a hit.
                wrong = values > 0 if name == schema.SENTINEL_NONFINITE else ~np.isfinite(values)
                bad = series.index[wrong]
                if len(bad):
                    hits.append(pd.DataFrame({"step": bad.to_numpy(dtype=np.int64), "name": name}))
        if not hits:
            return pd.DataFrame({"step": pd.Series(dtype=np.int64), "name": pd.Series(dtype=object)})
        return pd.concat(hits, ignore_index=True)
