"""`peftlab` command line: query results.duckdb read-only, print its tables, draw its plots."""

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import duckdb

from peftlab.results import VIEWS, connect_readonly, format_table, markdown_tables, write_plots
from peftlab.results.schema import REPORT_VIEWS

DEFAULT_DB = Path("results/results.duckdb")


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
        tables = markdown_tables(con, args.view or REPORT_VIEWS)
    if args.out is None:
        print("\n\n".join(f"## {view}\n\n{md}" for view, md in tables.items()))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for view, md in tables.items():
        path = args.out / f"{view}.md"
        path.write_text(f"## {view}\n\n{md}\n")
        print(path)


def _plots(args: argparse.Namespace) -> None:
    with connect_readonly(args.db) as con:
        write_plots(con, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftlab", description=__doc__)
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
    t.set_defaults(func=_tables)

    p = sub.add_parser("plots", help="write quality-vs-budget and Pareto plots (PNG and SVG)")
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help=db_help)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=_plots)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `peftlab` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, duckdb.Error) as e:
        print(f"peftlab {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
