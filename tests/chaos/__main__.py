"""``python -m tests.chaos --seed N --duration S``: one chaos campaign, then its verdict.

Exit 0 when every valid event landed exactly once, every bad record is dead-lettered
with its reason, nothing is wedged and no secret is in a log; 1 otherwise. The last
line printed is the verdict (``--json FILE`` writes it in full).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tests.chaos.campaign import Campaign, Config


def main(argv: list[str]) -> int:
    d = Config()
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=d.seed, help="same seed, same plan and data")
    p.add_argument("--duration", type=float, default=d.duration_s, metavar="S",
                   help=f"seconds of chaos while the producer writes (default {d.duration_s:.0f})")
    p.add_argument("--events", type=int, default=d.events, help=f"default {d.events:,}")
    p.add_argument("--shards", type=int, default=d.shards)
    p.add_argument("--workers", type=int, default=d.workers, help="stage workers")
    p.add_argument("--kill-every", type=float, default=d.kill_every_s, metavar="S",
                   help="mean seconds between SIGKILLs (they rotate over the three kinds)")
    p.add_argument("--bad-fraction", type=float, default=d.bad_fraction)
    p.add_argument("--fault-rate", type=float, default=d.fault_rate,
                   help="share of consumer GetRecords calls faulted outside storms")
    p.add_argument("--settle-timeout", type=float, default=d.settle_timeout_s, metavar="S")
    p.add_argument("--hosts", type=int, default=d.hosts,
                   help="more than 1: that many supervisord hosts in agent mode, and whole-host "
                        "crashes in the plan")
    p.add_argument("--host-crash-every", type=float, default=d.host_crash_every_s, metavar="S",
                   help="with --hosts: mean seconds between whole-host crashes")
    p.add_argument("--control", choices=("postgres", "dynamodb"), default=d.control,
                   help="control store backend (dynamodb: moto's, on the S3 port)")
    p.add_argument("--warehouse", choices=("postgres", "redshift-like"), default=d.warehouse,
                   help="warehouse mode (redshift-like: SERIALIZABLE, 300 ms per COMMIT)")
    p.add_argument("--no-reprocess", action="store_true",
                   help="no mid-run transform deploy + shardline reprocess")
    p.add_argument("--lake", action=argparse.BooleanOptionalAction, default=d.lake,
                   help="page_views also to the Iceberg lake, its lake loader killed on the "
                        "plan, the lake checked like the warehouse (default: on)")
    p.add_argument("--tail-rate", type=float, default=d.tail_rate, metavar="N",
                   help="access-log lines a second through a `shardline tail` the plan kills "
                        f"(0: no tail source; default {d.tail_rate:g})")
    p.add_argument("--relay-rate", type=float, default=d.relay_rate, metavar="N",
                   help="page views a second through a `shardline relay` the plan kills "
                        f"(0: no relay source; default {d.relay_rate:g})")
    p.add_argument("--dir", type=Path, help="work directory (default: a new /tmp directory)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the verdict as JSON")
    p.add_argument("--keep-stack", action="store_true", help="leave the local stack running")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    cfg = Config(seed=a.seed, duration_s=a.duration, events=a.events, shards=a.shards,
                 workers=a.workers, kill_every_s=a.kill_every, bad_fraction=a.bad_fraction,
                 fault_rate=a.fault_rate, settle_timeout_s=a.settle_timeout, dir=a.dir,
                 hosts=a.hosts, host_crash_every_s=a.host_crash_every,
                 control=a.control, warehouse=a.warehouse, reprocess=not a.no_reprocess,
                 lake=a.lake, tail_rate=a.tail_rate, relay_rate=a.relay_rate)
    campaign = Campaign(cfg, say=lambda text: print(text, flush=True))
    try:
        v = campaign.run()
    finally:
        campaign.stop(keep_stack=a.keep_stack)
    if a.json:
        a.json.write_text(json.dumps(v.as_dict(), indent=2) + "\n")
    print("how the fleet reacted (from its logs):")
    for what, n in v.reactions.items():
        print(f"  {n:6,}  {what}")
    for problem in v.problems:
        print(f"problem: {problem}")
    print(v.line(), flush=True)
    return 0 if v.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
