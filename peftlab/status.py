"""A stage's outcome, written into its own output file, so that one failure does not stop a study.

Every job of the DAG (data preparation, tokenizer, base model, training, evaluation, benchmark)
either succeeds or writes its output record with `status: failed`, the error and the log path, and
exits normally. A job whose input records a failure writes `status: skipped` with the reason
instead of running. Snakemake therefore always reaches the aggregate rule (whose inputs must all
exist), and the database holds every finished run beside the failed and skipped ones, each with
its reason, rather than nothing at all because one data job failed.

A record without a `status` key (a corpus or shard manifest, a tokenizer, a base model's
pretrain.json written by a successful job) is a success. A failed or skipped job reruns when its
config or code changes, like any other; to retry one unchanged, delete its record or use
`snakemake --forcerun <record>`. Interruptions are not failures (see failure_recorded).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from peftlab.atomic import write_json
from peftlab.provenance import utc_now
from peftlab.train import Preempted, discard_checkpoints

log = logging.getLogger(__name__)


@contextmanager
def failure_recorded(record_path: Path, identity: dict, log_path: Path | None = None, *,
                     checkpoint_dir: Path | None = None) -> Iterator[None]:
    """Turn an error inside a stage into a record with status "failed", the reason and the log path.

    The job then succeeds, so the rest of the study (and its aggregation) goes on and the database
    shows the failure instead of silently missing the run. Interruptions are not failures: SIGTERM
    (Preempted), Ctrl-C and being out of memory propagate, so Snakemake/SLURM retry or requeue the
    job and it resumes from its checkpoint. A failed run is finished, so its training checkpoint
    (`checkpoint_dir`) is removed with it; an interrupted one keeps it. (A completed train() removes
    its own.)
    """
    try:
        yield
    except (Preempted, KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:
        log.exception("stage failed; recording the failure in %s", record_path)
        write_json({**identity, "status": "failed", "error": f"{type(error).__name__}: {error}",
                    "log_path": str(log_path) if log_path else None, "finished_at": utc_now()}, record_path)
        if checkpoint_dir is not None:
            discard_checkpoints(checkpoint_dir)


def upstream_failure(records: Mapping[Path | str, str]) -> str | None:
    """Why a job's inputs are unusable: the first record (path -> the stage that wrote it) whose status is
    not ok, as "<stage> <status> (<path>): <error>"; None when every input stage succeeded."""
    for path, stage in records.items():
        record = json.loads(Path(path).read_text())
        status = record.get("status", "ok") if isinstance(record, dict) else "ok"
        if status != "ok":
            return f"{stage} {status} ({path}): {record.get('error')}"
    return None


def record_skipped(record_path: Path, identity: dict, reason: str) -> None:
    """The output record of a job that did not run because an input stage failed."""
    log.warning("skipped: %s", reason)
    write_json({**identity, "status": "skipped", "error": reason, "finished_at": utc_now()}, record_path)
