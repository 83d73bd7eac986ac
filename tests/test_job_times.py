"""benchmarks/job_times.py reads job durations from a Snakemake log (the demo's time breakdown comes from it)."""

import datetime as dt
import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("job_times", Path(__file__).parent.parent / "benchmarks" / "job_times.py")
job_times = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(job_times)

# Snakemake 9's order: jobid before reason and wildcards; two jobs overlap and finish in the other order.
LOG = """\
[Wed Dec  2 14:12:45 2026]
localrule build_shards:
    input: results/demo/corpora/topic/manifest.json
    output: results/demo/shards/minilm/topic/manifest.json
    jobid: 64
    reason: Missing output files: results/demo/shards/minilm/topic/manifest.json
    wildcards: study=demo, model=minilm, task=topic
    resources: tmpdir=/tmp
[Wed Dec  2 14:12:46 2026]
rule build_tokenizer:
    jobid: 3
    wildcards: study=demo, model=tiny-marian
[Wed Dec  2 14:12:51 2026]
Finished jobid: 3 (Rule: build_tokenizer)
1 of 2 steps (50%) done
[Wed Dec  2 14:13:02 2026]
Finished jobid: 64 (Rule: build_shards)
"""


def test_durations_and_wildcards_of_overlapping_jobs():
    jobs = job_times.job_durations(LOG)
    assert [(rule, wildcards, seconds) for rule, wildcards, seconds, _ in jobs] == [
        ("build_tokenizer", "study=demo, model=tiny-marian", 5.0),
        ("build_shards", "study=demo, model=minilm, task=topic", 17.0)]
    assert jobs[1][3] == dt.datetime(2026, 12, 2, 14, 12, 45)
