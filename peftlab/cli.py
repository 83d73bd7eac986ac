"""`peftlab` command line: query results.duckdb read-only, print its tables, draw its plots, show a study's
progress."""

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import duckdb

import peftlab
from peftlab.results import VIEWS, connect_readonly, format_table, markdown_tables, write_plots
from peftlab.results.schema import REPORT_VIEWS

DEFAULT_DB = Path("results/results.duckdb")
DEFAULT_SCHEMA = Path("config/schema.yaml")
STAGES = ("train", "eval", "bench")  # the records a run of the grid ends with (rules/common.smk final_outputs)


def _query(args: argparse.Namespace) -> None:
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    with connect_readonly(args.db) as con:
        cur = con.execute(sql)
        if cur.description is None:  # a statement without a result set (e.g. CREATE TEMP TABLE)
            return
        columns = [d[0] for d in cur.description]
        is_json = [d[1] == "JSON" for d in cur.description]
        rows = cur.fetchall()
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    elif args.format == "json":
        # JSON columns nest as objects; default=str turns timestamps and decimals into strings
        records = [{c: json.loads(v) if j and v is not None else v
                    for c, v, j in zip(columns, r, is_json, strict=True)} for r in rows]
        print(json.dumps(records, default=str))
    else:
        print(format_table(columns, rows))


def _tables(args: argparse.Namespace) -> None:
    with connect_readonly(args.db) as con:
        tables = markdown_tables(con, args.view or REPORT_VIEWS, study=args.study, task=args.task)
    scope = "".join(f", {k} {v}" for k, v in (("study", args.study), ("task", args.task)) if v is not None)
    if args.out is None:
        print("\n\n".join(f"## {name}{scope}\n\n{md}" for name, md in tables.items()))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name, md in tables.items():
        path = args.out / f"{name}.md"
        path.write_text(f"## {name}{scope}\n\n{md}\n")
        print(path)


def _plots(args: argparse.Namespace) -> None:
    with connect_readonly(args.db) as con:
        write_plots(con, args.out)


def _mlflow(args: argparse.Namespace) -> None:
    from peftlab.results.mlflow_export import export_to_mlflow

    if not args.tracking_uri:
        raise ValueError("say where to export: --tracking-uri (e.g. sqlite:///mlflow.db, http://host:5000) "
                         "or MLFLOW_TRACKING_URI")
    counts = export_to_mlflow(args.db, args.tracking_uri, study=args.study)
    print(f"exported to {args.tracking_uri}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))


def run_state(run_dir: Path) -> tuple[str, str]:
    """(finished | failed | pending, detail) of one run from its records: failed when any stage recorded a
    failure or skip, finished when train, eval and bench records all exist, else pending (what is missing)."""
    missing = []
    for stage in STAGES:
        path = run_dir / f"{stage}.json"
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            missing.append(stage)
            continue
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        status = record.get("status", "ok") if isinstance(record, dict) else "ok"
        if status in ("failed", "skipped"):
            return "failed", f"{stage} {status}: {record.get('error')}"
    return ("pending", "no " + ", ".join(f"{m}.json" for m in missing)) if missing else ("finished", "")


def _status(args: argparse.Namespace) -> None:
    from peftlab import grid
    from peftlab.config_io import load_study_config

    config = load_study_config(args.config, args.schema)
    runs = grid.expand_runs(config)
    dirs = [args.root / run.path for run in runs]
    states = [run_state(d) for d in dirs]
    shown = [(run.run_id, state, detail) for run, (state, detail) in zip(runs, states, strict=True)
             if args.only is None or state in args.only]
    if shown:
        print(format_table(["run_id", "state", "detail"], shown))
    counts = {s: sum(1 for state, _ in states if state == s) for s in ("finished", "failed", "pending")}
    print(f"study {config['study']}: {len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if args.aggregate:
        _aggregate_so_far(args, config, runs, dirs)


def _aggregate_so_far(args: argparse.Namespace, config: dict, runs: list, dirs: list[Path]) -> None:
    """Load the study's grid as it stands, as the workflow's aggregate rule does: the same call with the same
    run directories (unfinished ones load as they are: missing or without eval/bench), so the rule's later
    full aggregation replaces these rows by run_id rather than adding to them."""
    from peftlab import grid
    from peftlab.results import aggregate, load_expectations, load_study_tasks

    study = config["study"]
    counts = aggregate(dirs, args.db, study=study)
    tasks = sorted({grid.base_name(run.task) for run in runs})
    load_study_tasks(args.db, study, {name: config["tasks"][name] for name in tasks})
    expected = args.root / "config" / "studies" / f"{study}.expected.yaml"
    load_expectations(args.db, study, expected if expected.exists() else None)
    print(f"loaded into {args.db}: " + ", ".join(f"{n} {t}" for t, n in counts.items())
          + " (mt_significance is computed by the workflow's aggregate rule)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftlab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {peftlab.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    db_help = f"results database (default: {DEFAULT_DB})"

    q = sub.add_parser("query", help="run SQL against the results database (read-only)")
    q.add_argument("sql", help="SQL to run; - reads it from stdin")
    q.add_argument("--db", type=Path, default=DEFAULT_DB, help=db_help)
    q.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table rounds to 4 significant digits; csv and json keep full precision")
    q.set_defaults(func=_query)

    t = sub.add_parser("tables", help="print the report views as Markdown tables")
    t.add_argument("--db", type=Path, default=DEFAULT_DB, help=db_help)
    t.add_argument("--out", type=Path, help="write one <view>.md per view here instead of printing")
    t.add_argument("--view", action="append", choices=list(VIEWS),
                   help=f"view to print, repeatable (default: {', '.join(REPORT_VIEWS)})")
    t.add_argument("--study", help="only this study's rows")
    t.add_argument("--task", help="only this task's rows (views with a task column)")
    t.set_defaults(func=_tables)

    p = sub.add_parser("plots", help="write quality-vs-budget and Pareto plots (PNG and SVG)")
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help=db_help)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=_plots)

    s = sub.add_parser("status", help="per run of a study's grid: finished, failed or pending")
    s.add_argument("config", type=Path, help="the study's config, e.g. config/studies/coda.yaml")
    s.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA, help=f"config schema (default: {DEFAULT_SCHEMA})")
    s.add_argument("--root", type=Path, default=Path("."),
                   help="the workflow's working directory, holding results/ (default: .)")
    s.add_argument("--only", action="append", choices=("finished", "failed", "pending"),
                   help="list only runs in this state, repeatable (the counts cover all)")
    s.add_argument("--aggregate", action="store_true",
                   help="also load what has finished so far into the results database")
    s.add_argument("--db", type=Path, default=DEFAULT_DB, help=db_help + " (with --aggregate)")
    s.set_defaults(func=_status)

    m = sub.add_parser("mlflow", help="export runs, training curves and scores to MLflow (peftlab[mlflow])")
    m.add_argument("--db", type=Path, default=DEFAULT_DB, help=db_help)
    m.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                   help="MLflow tracking store: sqlite:///mlflow.db (offline), http://host:5000, ... "
                        "(default: $MLFLOW_TRACKING_URI); one experiment per study")
    m.add_argument("--study", help="only this study's runs")
    m.set_defaults(func=_mlflow)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `peftlab` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`peftlab tables | head`): not an error; stop writing, and keep Python from
        # reporting the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (FileNotFoundError, ValueError, ImportError, duckdb.Error) as e:
        print(f"peftlab {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
