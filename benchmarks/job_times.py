"""Per-rule job durations from a snakemake log: where a workflow's wall time went.

    python benchmarks/job_times.py .snakemake/log/<run>.snakemake.log [--jobs]

Sums each rule's job seconds (start line to "Finished jobid"), so the totals read as core-seconds for 1-thread
jobs; compare their sum / cores with the run's elapsed time to see whether scheduling or compute dominates.
"""

import argparse
import collections
import datetime as dt
import re
from pathlib import Path


def job_durations(log_text: str) -> list[tuple[str, str, float, dt.datetime]]:
    """(rule, wildcards, seconds, start) of every finished job in a snakemake log."""
    started: dict[str, list] = {}
    done, stamp, current = [], None, None
    for line in log_text.splitlines():
        if m := re.match(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$", line):
            stamp = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"^(?:local)?rule (\w+):", line):
            current = [m.group(1), "", stamp]
        elif (m := re.match(r"^\s+wildcards: (.*)", line)) and current:
            current[1] = m.group(1)  # Snakemake 9 prints it after the jobid line: the same list, so it is kept
        elif (m := re.match(r"^\s+jobid: (\d+)", line)) and current:
            started[m.group(1)] = current
        elif (m := re.match(r"^Finished jobid: (\d+)", line)) and m.group(1) in started:
            rule, wildcards, start = started.pop(m.group(1))
            done.append((rule, wildcards, (stamp - start).total_seconds(), start))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path)
    parser.add_argument("--jobs", action="store_true", help="also list every job in start order")
    args = parser.parse_args()
    jobs = job_durations(args.log.read_text())
    by_rule = collections.defaultdict(list)
    for rule, _, seconds, _ in jobs:
        by_rule[rule].append(seconds)
    print(f"| {'rule':<18} | {'jobs':>4} | {'sum s':>7} | {'mean s':>6} | {'max s':>6} |")
    print(f"|{'-' * 20}|{'-' * 6}|{'-' * 9}|{'-' * 8}|{'-' * 8}|")
    for rule, secs in sorted(by_rule.items(), key=lambda kv: -sum(kv[1])):
        total = sum(secs)
        print(f"| {rule:<18} | {len(secs):>4} | {total:>7.0f} | {total / len(secs):>6.1f} | {max(secs):>6.0f} |")
    print(f"total job seconds: {sum(s for _, _, s, _ in jobs):.0f}")
    if args.jobs:
        for rule, wildcards, seconds, start in sorted(jobs, key=lambda j: j[3]):
            print(start.time(), f"{seconds:6.0f}", rule, wildcards)


if __name__ == "__main__":
    main()
