"""Files per run in a team logdir after a long run: the compaction policy (trainer/runlog/publisher.py)
applied to a simulated 3-day run of 8 ranks publishing every second, and the real publisher on a
shorter real run to show the simulation counts what the publisher does.

    python bench/team_files.py [--days 3] [--ranks 8] [--real-publishes 600]
    python bench/team_files.py --smoke        # 1 simulated hour, 120 real publishes

The bound (publisher.py): per rank at most (FANIN-1)*MAX_LEVEL + ceil(publishes / FANIN**MAX_LEVEL)
files, plus one per MAX_COMPACT_BYTES where a merge would exceed that size.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_common import BENCH_DIR  # noqa: E402


def simulate(publishes: int) -> int:
    """Files left for one rank after `publishes` publishes, by the publisher's own merge rule."""
    from gradwatch.trainer.runlog.publisher import FANIN, MAX_LEVEL, _mergeable_group, level_of

    entries: list[tuple[int, int, str]] = []  # (first, last, name) of files still mergeable
    final = 0
    for seq in range(1, publishes + 1):
        entries.append((seq, seq, ""))
        while (group := _mergeable_group(entries)) is not None:
            start = entries.index(group[0])
            merged = (group[0][0], group[-1][1], "")
            entries[start:start + FANIN] = [merged]
        kept = [e for e in entries if level_of(e[0], e[1]) < MAX_LEVEL]
        final += len(entries) - len(kept)
        entries = kept
    return len(entries) + final


def real(publishes: int) -> tuple[int, int]:
    """(files in the store, simulated count) for a real spooled run published `publishes` times."""
    from gradwatch.trainer.runlog import schema
    from gradwatch.trainer.runlog.publisher import Publisher
    from gradwatch.trainer.runlog.stores import FolderStore
    from gradwatch.trainer.runlog.writer import RunWriter

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gw-team-files-", dir=BENCH_DIR))
    spool = tmp / "spool" / "long-r00000"
    spool.mkdir(parents=True)
    writer = RunWriter(spool, flush_interval_s=0.01)
    writer.set_meta_now(schema_version=schema.SCHEMA_VERSION, run_id="long", name="long", status="running",
                        started=time.time(), world_size=1)
    store = FolderStore(tmp / "shared")
    publisher = Publisher(spool, store, "long", 0, interval_s=3600)
    for step in range(publishes):
        writer.add_scalars(step, {"loss": 1.0 / (step + 1)}, time.time())
        writer.flush()
        publisher.cycle(force=True)
    writer.close()
    publisher.close(timeout_s=5)
    files = len(store.list("long/segments/r00000"))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return files, simulate(publisher.published)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--publish-interval", type=float, default=1.0)
    parser.add_argument("--real-publishes", type=int, default=600)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.days, args.real_publishes = 1 / 24, 120
    from gradwatch.trainer.runlog.publisher import FANIN, MAX_LEVEL

    publishes = int(args.days * 86400 / args.publish_interval)
    per_rank = simulate(publishes)
    bound = (FANIN - 1) * MAX_LEVEL + math.ceil(publishes / FANIN ** MAX_LEVEL)
    real_files, real_simulated = real(args.real_publishes)
    print(json.dumps({
        "bench": "team_files", "days": args.days, "ranks": args.ranks, "publish_interval_s": args.publish_interval,
        "publishes_per_rank": publishes, "files_per_rank": per_rank, "files_per_run": per_rank * args.ranks,
        "bound_per_rank": bound, "without_compaction_per_run": publishes * args.ranks,
        "real_check": {"publishes": args.real_publishes, "files": real_files, "simulated": real_simulated},
    }, indent=2))


if __name__ == "__main__":
    main()
