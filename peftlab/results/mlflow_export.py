"""Export results.duckdb to MLflow (optional, `pip install 'peftlab[mlflow]'`): one MLflow run per peftlab run,
in one experiment per study, with the training curve as step metrics (train_loss, dev_loss, lr) and the run's
final figures (test scores, deployed latency ratios, trainable parameters, cost) as metrics.

Why from the database rather than from each training job: MLflow then shows exactly the numbers the tables
show (one source); a tracking server that is down, or a SQLite store that 64 parallel jobs would write at once,
never slows or fails training; and no tracking setting reaches a job's parameters (adding one reruns nothing).
To watch a running study, export what has finished so far (`peftlab status <config> --aggregate`, then
`peftlab mlflow`) as often as you like: exporting again is idempotent. A run whose exported content has not
changed is left alone; a run retrained or re-evaluated since replaces its MLflow run (the old one is deleted),
so an experiment never holds two MLflow runs of one peftlab run.
"""

import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from peftlab.results.store import connect_readonly

RUN_TAG = "peftlab.run_id"  # names the peftlab run an MLflow run holds
KEY_TAG = "peftlab.export_key"  # hash of what was exported: unchanged -> nothing to do
PARAM_COLUMNS = ("task", "task_kind", "method", "method_family", "budget", "budget_target", "seed", "base_model",
                 "base_model_id", "precision", "devices", "device", "dev_metric", "code_fingerprint",
                 "data_manifest_sha256")
METRIC_COLUMNS = ("realised_fraction", "rel_error", "trainable_params", "total_params", "head_params",
                  "adapter_bytes", "steps", "wall_time_s", "time_per_step_s", "tokens_per_s", "peak_memory_mb",
                  "memory_avg_mb", "memory_p99_mb", "best_dev_score", "best_step", "time_to_best_s", "mfu")
CURVE_METRICS = ("train_loss", "dev_loss", "lr")
# runs.status -> MLflow's run status; "missing" (no train.json yet) runs are not exported: nothing to show
MLFLOW_STATUS = {"ok": "FINISHED", "failed": "FAILED", "skipped": "KILLED"}
# MLflow's limits: a log_batch call takes at most 1000 metrics and 100 params; a tag value at most 8000 characters
_BATCH_METRICS, _BATCH_PARAMS, _TAG_CHARS = 1000, 100, 8000


def _millis(timestamp: datetime | None) -> int | None:
    if timestamp is None:
        return None
    if timestamp.tzinfo is None:  # the database's TIMESTAMPs are UTC; a naive one would be read as local time
        timestamp = timestamp.replace(tzinfo=UTC)
    return int(timestamp.timestamp() * 1000)


def _flat(prefix: str, value: Any) -> dict[str, str]:
    """Nested config -> MLflow params: {"train_config.lr": "0.001", "method_config.target_modules": '["q"]'}."""
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items() for k, v in _flat(f"{prefix}.{key}", sub).items()}
    return {prefix: value if isinstance(value, str) else json.dumps(value)}


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict]:
    cur = con.execute(sql, params)
    columns = [d[0] for d in cur.description]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def export_records(db_path: Path | str, study: str | None = None) -> list[dict]:
    """What `export_to_mlflow` writes, one record per run (params, tags, step metrics, final metrics, times),
    read from the database read-only. Final metrics: `<split>/<metric>` for evaluation scores of the whole split
    (no detector, layer or subset), `latency/<task>_b<batch>_len<seq>/<ratio_to_base|ms_median>` for the deployed
    benchmark rows, and the runs table's cost and size columns."""
    where, args = ("WHERE study = ?", [study]) if study is not None else ("", [])
    with connect_readonly(db_path) as con:
        runs = [r for r in _query(con, f"SELECT * FROM runs {where} ORDER BY run_id", args)
                if r["status"] in MLFLOW_STATUS]
        ids = [r["run_id"] for r in runs]
        if not ids:
            return []
        curves, finals = defaultdict(list), defaultdict(dict)
        for row in _query(con, "SELECT * FROM training_curves WHERE list_contains(?, run_id) ORDER BY run_id, step",
                          [ids]):
            curves[row["run_id"]].append(row)
        for row in _query(con, "SELECT run_id, split, metric, value FROM evaluations WHERE list_contains(?, run_id) "
                               "AND detector IS NULL AND layer IS NULL AND subset IS NULL AND value IS NOT NULL",
                          [ids]):
            finals[row["run_id"]][f"{row['split']}/{row['metric']}"] = row["value"]
        for row in _query(con, "SELECT run_id, task, batch_size, seq_len, ratio_to_base, latency_ms_median "
                               "FROM benchmarks WHERE list_contains(?, run_id) AND deployed", [ids]):
            name = f"latency/{row['task']}_b{row['batch_size']}_len{row['seq_len']}"
            for column, suffix in (("ratio_to_base", "ratio_to_base"), ("latency_ms_median", "ms_median")):
                if row[column] is not None:
                    finals[row["run_id"]][f"{name}/{suffix}"] = row[column]
    records = []
    for run in runs:
        params = {c: run[c] if isinstance(run[c], str) else json.dumps(run[c]) for c in PARAM_COLUMNS
                  if run[c] is not None}
        for column in ("method_config", "train_config"):  # their own prefix: "method" is a column already
            if run[column] and (config := json.loads(run[column])):
                params.update(_flat(column, config))
        metrics = {c: float(run[c]) for c in METRIC_COLUMNS if run[c] is not None}
        metrics.update(finals[run["run_id"]])
        tags = {RUN_TAG: run["run_id"], "peftlab.study": run["study"], "peftlab.status": run["status"]}
        for column in ("eval_status", "bench_status", "error", "eval_error", "bench_error", "run_dir"):
            if run[column] is not None:
                tags[f"peftlab.{column}"] = str(run[column])[:_TAG_CHARS]
        start = _millis(run["started_at"])
        steps = [{"step": p["step"], "timestamp": (start or 0) + int((p["elapsed_s"] or 0) * 1000),
                  **{m: p[m] for m in CURVE_METRICS if p[m] is not None}} for p in curves[run["run_id"]]]
        record = {"run_id": run["run_id"], "study": run["study"], "status": run["status"], "params": params,
                  "tags": tags, "metrics": metrics, "curve": steps, "start_ms": start,
                  "end_ms": _millis(run["finished_at"])}
        record["key"] = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
        records.append(record)
    return records


def _client(tracking_uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ImportError("exporting to MLflow needs the mlflow package: pip install 'peftlab[mlflow]' "
                          "(mlflow-skinny with SQLAlchemy for a sqlite:/// store)") from None
    return MlflowClient(tracking_uri=tracking_uri)


def _active_runs(client, experiment_id: str) -> dict[str, list]:
    from mlflow.entities import ViewType

    found, token = defaultdict(list), None
    while True:
        page = client.search_runs([experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                  page_token=token)
        for run in page:
            if RUN_TAG in run.data.tags:
                found[run.data.tags[RUN_TAG]].append(run)
        token = page.token
        if not token:
            return found


def _log(client, record: dict, experiment_id: str) -> None:
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, start_time=record["start_ms"], run_name=record["run_id"],
                            tags=record["tags"])
    mlflow_id = run.info.run_id
    end = record["end_ms"] or record["start_ms"] or 0
    metrics = [Metric(name, float(point[name]), point["timestamp"], point["step"])
               for point in record["curve"] for name in CURVE_METRICS if name in point]
    metrics += [Metric(name, float(value), end, 0) for name, value in record["metrics"].items()]
    params = [Param(k, v) for k, v in record["params"].items()]
    for i in range(0, len(metrics), _BATCH_METRICS):
        client.log_batch(mlflow_id, metrics=metrics[i:i + _BATCH_METRICS])
    for i in range(0, len(params), _BATCH_PARAMS):
        client.log_batch(mlflow_id, params=params[i:i + _BATCH_PARAMS])
    client.set_terminated(mlflow_id, MLFLOW_STATUS[record["status"]], end_time=end or None)
    # the key last: an export that died half-way leaves a run without it, which the next export replaces
    client.set_tag(mlflow_id, KEY_TAG, record["key"])


def export_to_mlflow(db_path: Path | str, tracking_uri: str, study: str | None = None) -> dict[str, int]:
    """Write the database's runs (of `study`, or all) to the MLflow tracking store at `tracking_uri`, an
    experiment per study named after it. Returns counts: created (no MLflow run yet), replaced (the run's records
    changed since the last export), unchanged."""
    records = export_records(db_path, study)
    if not records:
        raise ValueError(f"no runs{'' if study is None else f' of study {study!r}'} in {db_path}")
    client = _client(tracking_uri)
    counts = {"created": 0, "replaced": 0, "unchanged": 0}
    by_study = defaultdict(list)
    for record in records:
        by_study[record["study"]].append(record)
    for name, study_records in by_study.items():
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        existing = _active_runs(client, experiment_id)
        for record in study_records:
            old = existing.get(record["run_id"], [])
            if len(old) == 1 and old[0].data.tags.get(KEY_TAG) == record["key"]:
                counts["unchanged"] += 1
                continue
            for run in old:
                client.delete_run(run.info.run_id)
            _log(client, record, experiment_id)
            counts["replaced" if old else "created"] += 1
    return counts
