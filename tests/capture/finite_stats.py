"""The check that every statistic of a run is a number wherever it applies, shared by the
single-process paths' test and the FSDP2 test: a statistic added to `schema.STAT_TABLE` but
left out of one producer reads NaN there, and fails here."""

from __future__ import annotations

import math

from gradwatch.trainer.capture.activation_stats import DEAD_UNIT_TYPES, SATURATION_BOUNDS
from gradwatch.trainer.runlog import RunReader, schema

# Statistics that apply to only some tensors of their kinds, by design (docs/log-format.md).
# Any other field must be finite on every row of every kind its StatField names.
APPLIES_ONLY = {
    "saturated_frac": lambda tensor: tensor["module_type"] in SATURATION_BOUNDS,
    "dead_frac": lambda tensor: tensor["module_type"] in DEAD_UNIT_TYPES,
    "update_ratio": lambda tensor: bool(tensor["trainable"]),
}


def nan_statistics(run_path) -> list[str]:
    """'step name kind field = value' for every statistic that applies to a row and is not a finite
    number; also asserts each kind of row is present."""
    with RunReader(run_path) as reader:
        rows, _ = reader.layer_stats()
        tensors = reader.tensors()
    by_name = {t["name"]: t for t in tensors.to_dict("records")}
    assert set(rows["kind"]) == {"grad", "weight", "activation"}, set(rows["kind"])
    bad = []
    for row in rows.to_dict("records"):
        tensor = by_name[row["name"]]
        for field in schema.STAT_TABLE:
            if row["kind"] not in field.kinds:
                continue
            if field.name in APPLIES_ONLY and not APPLIES_ONLY[field.name](tensor):
                continue
            value = row[field.name]
            if value is None or not math.isfinite(value):
                bad.append(f"step {row['step']} {row['name']} {row['kind']} {field.name} = {value}")
    return bad
