"""The live poll's server work with and without shared reads: CPU per poll and reads per change.

One run written in this process (gradwatch.testing.LiveRun, 12 layers, statistics and histograms every
step); two steps are written and flushed (one change), then VIEWERS/5 tabs poll it
(views.run.poll_impl, the callback's work without HTTP) holding the loss, per-layer gradient and
gradient histogram charts. The tabs poll in 5 groups, a change before each group, so they hold 5
different cursors, as tabs polling at their own moments do. Two stores read the same run, their
turns alternating: "shared" is the dashboard's (one read per change served to every viewer,
dashboard/live_tail.py + shared_reads.py); "per viewer" hands every poll its own reads (a
pass-through cache, no tails): what each poll cost before. Counted: reader queries per change
(deterministic); timed: time.process_time() per poll, median over the changes.

    python bench/live_poll_sharing.py [--viewers 20] [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COUNTED = ("cursors", "scalar_rows_after", "layer_values_after", "histograms")


class PerViewerReads:
    """A SharedReads stand-in that shares nothing: every poll computes its own answer."""

    reads = 0

    def get(self, _key, compute):
        return compute()


def count_reader_queries() -> Counter:
    from gradwatch.trainer.runlog import RunReader

    counts: Counter = Counter()
    for name in COUNTED:
        real = getattr(RunReader, name)

        def counting(self, *args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(self, *args, **kwargs)

        setattr(RunReader, name, counting)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()

    from gradwatch.dashboard import ids
    from gradwatch.dashboard.data import RunStore
    from gradwatch.dashboard.live_tail import LiveTails
    from gradwatch.dashboard.views import run as logic
    from gradwatch.dashboard.views import run_charts
    from gradwatch.testing import LiveRun

    counts = count_reader_queries()
    logdir = Path(tempfile.mkdtemp(prefix="gw-poll-sharing-"))
    live = LiveRun(logdir, "live", layers=12)
    stores = {"shared": RunStore(logdir, None), "per viewer": RunStore(logdir, None)}
    stores["per viewer"].shared = PerViewerReads()
    stores["per viewer"].tails = LiveTails(max_tails=0)  # nothing kept: each poll reads from its cursor
    try:
        for _ in range(20):
            live.write_step()
        live.writer.flush()
        reference = stores["shared"]
        info = reference.run_info("live")

        def draw(chart_id, **view):
            return run_charts.render(run_charts.BY_ID[chart_id], reference,
                                     run_charts.ChartArgs(run_id="live", info=info, **view))["live"]

        opened = {ids.FIG_LOSS: draw(ids.FIG_LOSS), ids.FIG_GRAD_TIME: draw(ids.FIG_GRAD_TIME),
                  ids.FIG_HIST_GRAD: draw(ids.FIG_HIST_GRAD, layer="net.0", param="weight")}
        tabs = {mode: [{"live": dict(opened), "meta": {"ticks": 0}} for _ in range(args.viewers)] for mode in stores}
        cpu = {mode: [] for mode in stores}
        reads = {mode: [] for mode in stores}
        groups = 5
        for round_index in range(args.rounds):
            for group in range(groups):  # a change, then a fifth of the tabs poll: five cursors, kept apart
                for _ in range(2):
                    live.write_step()
                live.writer.flush()
                order = list(stores) if (round_index + group) % 2 == 0 else list(stores)[::-1]
                for mode in order:
                    store, polls = stores[mode], 0
                    counts.clear()
                    start = time.process_time()
                    for tab in tabs[mode][group::groups]:
                        result = logic.poll_impl(store, "live", dict(tab["live"]), tab["meta"], slow_every=1)
                        for chart_id, payload in result["delta"].items():
                            held = tab["live"][chart_id]
                            tab["live"][chart_id] = dict(held, cursor=payload["to"],
                                                         appended=held["appended"] + payload["added"])
                        tab["meta"] = result["meta"]
                        polls += 1
                    elapsed = time.process_time() - start
                    if round_index >= 2:  # the first rounds spread the tabs out
                        cpu[mode].append(1000 * elapsed / polls)
                        reads[mode].append(sum(counts.values()))
        result = {"bench": "live_poll_sharing", "viewers": args.viewers, "changes_measured": len(cpu["shared"]),
                  **{f"{mode}_cpu_ms_per_poll": round(statistics.median(cpu[mode]), 3) for mode in stores},
                  **{f"{mode}_reader_queries_per_change": statistics.median(reads[mode]) for mode in stores}}
        result["cpu_ratio"] = round(result["per viewer_cpu_ms_per_poll"] / result["shared_cpu_ms_per_poll"], 2)
        print(f"{args.viewers} viewers at 5 cursors: per poll {result['per viewer_cpu_ms_per_poll']} ms "
              f"CPU reading per viewer, {result['shared_cpu_ms_per_poll']} ms shared (x{result['cpu_ratio']}); "
              f"reader queries per change {result['per viewer_reader_queries_per_change']} vs "
              f"{result['shared_reader_queries_per_change']}")
        print(json.dumps(result))
    finally:
        live.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
