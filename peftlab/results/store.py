"""Load per-run JSON records into results.duckdb, and open it read-only for queries."""

import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from .schema import STUDY_TABLES, TABLES, VIEWS

RECORD_FILES = ("train.json", "eval.json", "bench.json")
_CURVE_KEYS = ("step", "train_loss", "dev_loss", "lr", "elapsed_s")
_METRIC_KEYS = ("metric", "value", "signature", "detector", "layer", "subset")
_BENCH_KEYS = ("task", "batch_size", "seq_len", "new_tokens", "warmup", "repeats", "merged", "deployed",
               "latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_ms_mean", "latency_ms_std",
               "latency_cv", "base_latency_ms_median", "base_latency_ms_p10", "base_latency_ms_p90",
               "base_latency_cv", "ratio_to_base", "ratio_p10", "ratio_p90", "ratio_cv",
               "throughput_items_per_s", "peak_memory_mb")
_RUN_KEYS = ("study", "task", "task_kind", "method", "method_family", "budget", "budget_target", "seed",
             "status", "error", "log_path", "base_model", "base_model_id", "data_manifest_sha256",
             "code_fingerprint", "device")
_CURVE_SET, _METRIC_SET, _BENCH_SET = map(frozenset, (_CURVE_KEYS, _METRIC_KEYS, _BENCH_KEYS))
_EVAL_SET = frozenset({"run_id", "split", "n_examples", "status", "error", "metrics"})


def aggregate(run_dirs: Iterable[Path | str], db_path: Path | str, *, study: str | None = None) -> dict[str, int]:
    """Load the records of `run_dirs` into the DuckDB file `db_path` and return the rows loaded per table.

    Every row of a loaded run_id is replaced, so re-running is idempotent and studies accumulate in
    one file. With `study`, run_dirs are that study's whole grid: every run must belong to it, and the
    study's rows of runs not named here (a method or task removed from the config) are deleted from
    every table, so the database mirrors the current grid. Without it, runs not named are kept.
    The update is all-or-nothing: the file is copied,
    changed in one transaction, checkpointed, fsynced and moved over the original with os.replace.
    We copy rather than write in place because readers (a notebook, `peftlab query`) hold DuckDB's
    file lock, which would make an in-place writer fail; they keep reading the old file instead. A
    crash leaves the original untouched. The cost is one file copy per call (see the benchmark).
    """
    db_path = Path(db_path)
    records = [_read_run(Path(d)) for d in run_dirs]  # parse everything before touching the DB
    frames = _frames(records)
    run_ids = frames["runs"]["run_id"]
    if run_ids.duplicated().any():
        raise ValueError(f"run_ids loaded twice: {sorted(set(run_ids[run_ids.duplicated()]))}")
    if study is not None and (others := sorted(set(run_ids[frames["runs"]["study"] != study]))):
        raise ValueError(f"runs of another study (or of none) in the grid of study {study!r}: {others[:5]}")
    with updating(db_path) as con:
        con.register("_loaded_ids", frames["runs"][["run_id"]])
        if study is not None:
            _delete_runs_outside_grid(con, study)
        for table in TABLES:
            con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM _loaded_ids)")
            con.register("_frame", frames[table])
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _frame")
            con.unregister("_frame")
    return {table: len(frame) for table, frame in frames.items()}


def _delete_runs_outside_grid(con: duckdb.DuckDBPyConnection, study: str) -> None:
    """Every row of the study's runs that are not in _loaded_ids: results of configurations that left the grid."""
    gone = "SELECT run_id FROM runs WHERE study = $study AND run_id NOT IN (SELECT run_id FROM _loaded_ids)"
    con.execute(f"DELETE FROM mt_significance WHERE study = $study AND (run_id IN ({gone}) "
                f"OR baseline_run_id IN ({gone}))", {"study": study})
    for table in [t for t in TABLES if t != "runs"] + ["runs"]:  # runs last: the others select through it
        con.execute(f"DELETE FROM {table} WHERE run_id IN ({gone})", {"study": study})


def replace_study_rows(db_path: Path | str, table: str, study: str, frame: pd.DataFrame) -> int:
    """Replace the rows of `study` in one of STUDY_TABLES with `frame` (its columns by name), atomically."""
    frame = frame.reindex(columns=[c for c, _, _ in STUDY_TABLES[table][1]])
    with updating(db_path) as con:
        con.execute(f"DELETE FROM {table} WHERE study = ?", [study])
        if len(frame):
            con.register("_rows", frame)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
            con.unregister("_rows")
    return len(frame)


@contextmanager
def updating(db_path: Path | str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a copy of `db_path` (schema and views created) inside one transaction; on a clean
    exit the copy is committed, checkpointed, fsynced and moved over the original, so readers never see a
    half-written file and a crash leaves the original untouched. One writer at a time (a lock file)."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(db_path):
        for stale in db_path.parent.glob(f".{db_path.name}.tmp*"):  # from a writer that was killed
            stale.unlink()
        tmp = db_path.with_name(f".{db_path.name}.tmp{os.getpid()}")
        try:
            if db_path.exists():
                if Path(f"{db_path}.wal").exists():  # fold a leftover write-ahead log into the file first
                    duckdb.connect(str(db_path)).close()
                shutil.copyfile(db_path, tmp)
            con = duckdb.connect(str(tmp))
            try:
                con.execute("BEGIN")
                _create_schema(con)
                yield con
                con.execute("COMMIT")
                con.execute("CHECKPOINT")  # everything in the main file, no WAL to carry along
            finally:
                con.close()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, db_path)
            _fsync_dir(db_path.parent)
        finally:
            for leftover in (tmp, Path(f"{tmp}.wal")):
                leftover.unlink(missing_ok=True)


# Read-only by construction rather than by filtering statements: the file is attached read-only, no file
# other than it can be read or written (COPY ... TO, ATTACH, read_csv, EXPORT), no extension is installed or
# loaded, and the configuration is locked so that SET cannot undo any of it.
READONLY_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def connect_readonly(db_path: Path | str) -> duckdb.DuckDBPyConnection:
    """Open the results database for queries that can change nothing and read no other file (READONLY_CONFIG);
    a clear FileNotFoundError if it is not there."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise FileNotFoundError(f"no results database at {db_path}: run the workflow's aggregate step "
                                "first, or pass --db")
    return duckdb.connect(str(db_path), read_only=True, config=READONLY_CONFIG)


def find_run_dirs(root: Path | str) -> list[Path]:
    """Run directories under `root` (a study's results folder or all of results/): those with a record."""
    return sorted({p.parent for name in RECORD_FILES for p in Path(root).rglob(name)})


def _create_schema(con: duckdb.DuckDBPyConnection) -> None:
    for table, (comment, columns) in {**TABLES, **STUDY_TABLES}.items():
        cols = ", ".join(f"{c} {t}" for c, t, _ in columns)
        key = ", PRIMARY KEY (run_id)" if table == "runs" else ""
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols}{key})")
        for c, t, text in columns:  # files written by an older peftlab gain new columns as NULL
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {c} {t}")
            con.execute(f"COMMENT ON COLUMN {table}.{c} IS {_sql_str(text)}")
        con.execute(f"COMMENT ON TABLE {table} IS {_sql_str(comment)}")
    for view, (comment, sql) in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {view} AS {sql}")
        con.execute(f"COMMENT ON VIEW {view} IS {_sql_str(comment)}")


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def _writer_lock(db_path: Path) -> Iterator[None]:
    # Two writers would each copy the old file and the last os.replace would drop the other's runs.
    with open(f"{db_path}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_run(run_dir: Path) -> dict[str, Any]:
    base = os.fspath(run_dir)  # plain strings: pathlib costs more than the JSON parsing here
    recs: dict[str, Any] = {"dir": base}
    for name in RECORD_FILES:
        path = os.path.join(base, name)
        try:
            with open(path, "rb") as f:
                recs[name] = json.load(f)
        except FileNotFoundError:
            continue
        except ValueError as e:
            e.add_note(f"while reading {path}")
            raise
    ids = {recs[n]["run_id"] for n in RECORD_FILES if n in recs and recs[n].get("run_id")}
    from_path = _identity_from_path(base)
    if from_path:
        ids.add(from_path["run_id"])
    if len(ids) != 1:
        raise ValueError(f"{base}: expected one run_id from the records and the path, found {sorted(ids)}")
    recs["run_id"] = ids.pop()
    recs["path_identity"] = from_path
    return recs


def _identity_from_path(run_dir: str) -> dict[str, Any] | None:
    """Identity from results/<study>/runs/<task>/<method>/<budget>/seed<k>, or None off that layout."""
    parts = run_dir.rstrip(os.sep).split(os.sep)
    if len(parts) < 6 or parts[-5] != "runs" or not parts[-1].startswith("seed"):
        return None
    study, _, task, method, budget, seed = parts[-6:]
    return {"run_id": f"{study}/{task}/{method}/{budget}/{seed}", "study": study, "task": task,
            "method": method, "budget": budget, "seed": int(seed.removeprefix("seed")),
            "budget_target": None if budget == "none" else float(budget)}


def _utc(ts: str | None) -> datetime | None:
    if not ts:
        return None
    t = datetime.fromisoformat(ts)
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def _dumps(obj: Any) -> str | None:
    return None if obj is None else json.dumps(obj, sort_keys=True)


def _extra(d: dict[str, Any], known: frozenset[str]) -> str | None:
    if d.keys() <= known:  # the common case, checked without building a dict
        return None
    return _dumps({k: v for k, v in d.items() if k not in known})


def _frames(records: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    now = datetime.now(UTC).replace(tzinfo=None)
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    for rec in records:
        run_id = rec["run_id"]
        tr = rec.get("train.json")
        ev = rec.get("eval.json")
        be = rec.get("bench.json")
        if tr is None:
            run = dict(rec["path_identity"] or {"run_id": run_id})
            run.update(status="missing", error=f"no train.json in {rec['dir']}")
        else:
            params, t = tr.get("params") or {}, tr.get("train") or {}
            run = {k: tr.get(k) for k in _RUN_KEYS}
            run.update(
                run_id=run_id, method_config=_dumps(tr.get("method_config")),
                train_config=_dumps(tr.get("train_config")), versions=_dumps(tr.get("versions")),
                trainable_params=params.get("trainable"), total_params=params.get("total"),
                realised_fraction=params.get("realised_fraction"), rel_error=params.get("rel_error"),
                head_params=params.get("head"), started_at=_utc(tr.get("started_at")),
                finished_at=_utc(tr.get("finished_at")),
                **{k: t.get(k) for k in ("steps", "wall_time_s", "time_per_step_s", "tokens_per_s",
                                         "peak_memory_mb", "best_dev_score", "dev_metric", "best_step",
                                         "time_to_best_s", "stopped_early", "model_flops", "mfu", "precision",
                                         "devices")},
                **{f"memory_{k}": (t.get("memory") or {}).get(k) for k in ("avg_mb", "p99_mb", "max_mb", "source")},
                adapter_bytes=tr.get("adapter_bytes"))
            if run["budget"] is not None:
                run["budget"] = str(run["budget"])
            for point in tr.get("curve") or []:
                rows["training_curves"].append({"run_id": run_id, **{k: point.get(k) for k in _CURVE_KEYS},
                                                "extra": _extra(point, _CURVE_SET)})
        run.update(run_dir=str(rec["dir"]), loaded_at=now,
                   eval_status=None if ev is None else ev.get("status"),
                   eval_error=None if ev is None else ev.get("error"),
                   eval_info=None if ev is None else _extra(ev, _EVAL_SET),
                   bench_status=None if be is None else be.get("status"),
                   bench_error=None if be is None else be.get("error"))
        rows["runs"].append(run)
        for m in (ev or {}).get("metrics") or []:
            row = {k: m.get(k) for k in _METRIC_KEYS}
            # A metric row may name its own split (zero-shot test-<lang>, ood) and size; else the record's.
            row.update(run_id=run_id, split=m.get("split") or ev.get("split"),
                       n_examples=m.get("n", ev.get("n_examples")), extra=_extra(m, _METRIC_SET | {"split", "n"}))
            if row["layer"] is not None:  # ints and names share one column
                row["layer"] = str(row["layer"])
            rows["evaluations"].append(row)
        for m in (be or {}).get("measurements") or []:
            rows["benchmarks"].append({"run_id": run_id, "device": be.get("device"),
                                       "threads": be.get("threads"), **{k: m.get(k) for k in _BENCH_KEYS},
                                       "extra": _extra(m, _BENCH_SET)})
    # Explicit columns so an empty load still has the table's shape.
    return {t: pd.DataFrame.from_records(rows[t], columns=[c for c, _, _ in TABLES[t][1]]) for t in TABLES}
