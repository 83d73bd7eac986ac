"""Markdown tables and plots drawn from the views of results.duckdb."""

import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from .schema import REPORT_VIEWS


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A padded Markdown (pipe) table; readable as text and renderable as Markdown."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), 3, *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(vals: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)) + " |"

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


# Identity columns lead every table in this order, whatever the view's own order.
_LEAD = ("study", "task", "method", "budget", "budget_target")
_KIND_SUFFIX = {"translation": "mt", "classification": "nlu"}


def markdown_tables(con: duckdb.DuckDBPyConnection, views: Sequence[str] = REPORT_VIEWS, *,
                    study: str | None = None, task: str | None = None) -> dict[str, str]:
    """{name: Markdown table} of the views, narrowed for reading: rows of `study` / `task` only (a view
    without that column is not filtered), split into one table per task kind (<view>_mt, <view>_nlu) where
    the view has a task column and its rows hold both, identity columns first (study, task, method, budget,
    budget_target), columns that are empty in every row of a table, or fixed by the filter, left out, and
    columns with one value in every row given once below the table. A view with no rows still gets a table."""
    kinds = dict(con.execute("SELECT DISTINCT task, task_kind FROM runs").fetchall())
    out = {}
    for view in views:
        df = con.execute(f"SELECT * FROM {view}").df()
        if study is not None and "study" in df:
            df = df[df["study"] == study]
        if task is not None and "task" in df:
            df = df[df["task"] == task]
        fixed = {c for c, v in (("study", study), ("task", task)) if v is not None}  # said in the title
        df = df[[c for c in _LEAD if c in df and c not in fixed] + [c for c in df if c not in _LEAD]]
        groups = [(view, df)]
        if "task" in df and len(df):
            kind = df["task"].map(lambda t: kinds.get(t) or "other")
            if kind.nunique() > 1:
                suffix = {k: _KIND_SUFFIX.get(k, k) for k in kind.unique()}
                groups = [(f"{view}_{suffix[k]}", df[kind == k]) for k in sorted(suffix, key=suffix.get)]
        for title, part in groups:
            if len(part):
                part = part.loc[:, part.notna().any()]
            rows = [[None if _missing(v) else v for v in r] for r in part.itertuples(index=False)]
            columns = list(part.columns)
            # A column with one value in every row (n_failed 0, latency_merged False) moves below the table as
            # "name value": the same figures in less width.
            same = [i for i, c in enumerate(columns) if len(rows) > 1 and c not in _LEAD
                    and len({_cell(r[i]) for r in rows}) == 1 and rows[0][i] is not None]
            note = ", ".join(f"{columns[i]} {_cell(rows[0][i])}" for i in same)
            keep = [i for i in range(len(columns)) if i not in same]
            table = format_table([columns[i] for i in keep], [[r[i] for i in keep] for r in rows])
            out[title] = f"{table}\n\nIn every row: {note}" if note else table
    return out


def _missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # lists, dicts: never missing
        return False


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9._+-]+", "-", p) for p in parts)


def write_plots(con: duckdb.DuckDBPyConnection, out_dir: Path | str,
                progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
                study: str | None = None) -> list[Path]:
    """Write, per (study, task), quality vs budget and the quality/latency Pareto front as PNG and SVG
    (latency as the ratio to the base model, with its spread).

    `study` restricts the plots to one study (the default draws every study in the database).
    """
    import matplotlib  # imported here so queries and tables start fast

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    only = "" if study is None else " AND study = $study"
    args = {} if study is None else {"study": study}
    qvb = con.execute(f"SELECT * FROM quality_vs_budget WHERE quality_mean IS NOT NULL{only}", args).df()
    par = con.execute(f"SELECT * FROM pareto WHERE quality IS NOT NULL AND latency_ratio_b1 IS NOT NULL{only}",
                      args).df()
    methods = sorted(set(qvb["method"]) | set(par["method"]))
    colour = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    written: list[Path] = []

    def save(fig: Any, stem: str) -> None:
        for ext in ("png", "svg"):
            path = out_dir / f"{stem}.{ext}"
            progress(f"writing {path}")
            fig.savefig(path, dpi=120, bbox_inches="tight")
            written.append(path)
        plt.close(fig)

    for (study, task), df in qvb.groupby(["study", "task"], sort=True):
        fig, ax = plt.subplots(figsize=(6, 4))
        df = df.assign(x=df["realised_fraction"].fillna(df["budget_target"]))
        for method, m in df.groupby("method"):
            knobbed = m[m["budget_target"].notna()].sort_values("x")
            if len(knobbed):
                ax.errorbar(knobbed["x"], knobbed["quality_mean"], yerr=knobbed["quality_std"].fillna(0),
                            marker="o", capsize=3, color=colour[method], label=method)
            for _, row in m[m["budget_target"].isna()].iterrows():  # no size knob: a reference line
                ax.axhline(row["quality_mean"], linestyle="--", color=colour[method],
                           label=f"{method} (no budget)")
        xs = df.loc[df["budget_target"].notna(), "x"]
        if (xs > 0).all() and xs.nunique() > 1:
            ax.set_xscale("log")
        ax.set(xlabel="trainable fraction of the base model (realised)",
               ylabel=f"{df['quality_metric'].iloc[0]} (mean over seeds, ±std)", title=f"{study}: {task}")
        ax.legend(fontsize="small")
        save(fig, _slug("quality_vs_budget", study, task))

    # Latency is the ratio to the base model timed beside each run (absolute ms move with the machine's load),
    # of the deployed variant (LoRA/IA3 merged); the bars are +-1 std of the per-repeat ratios (CV x ratio).
    for (study, task), df in par.groupby(["study", "task"], sort=True):
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, m in df.groupby("method"):
            ax.errorbar(m["latency_ratio_b1"], m["quality"], xerr=(m["latency_ratio_b1"] * m["latency_ratio_cv_b1"])
                        .fillna(0), fmt="o", capsize=3, color=colour[method], label=method, zorder=3)
            for _, row in m.iterrows():
                ax.annotate(row["budget"], (row["latency_ratio_b1"], row["quality"]), xytext=(4, 4),
                            textcoords="offset points", fontsize=7)
        # The 2-D front: walking from fastest to slowest, keep each point better than all faster ones.
        front, best = [], -math.inf
        for _, row in df.sort_values(["latency_ratio_b1", "quality"], ascending=[True, False]).iterrows():
            if row["quality"] > best:
                front.append(row)
                best = row["quality"]
        front_df = pd.DataFrame(front)
        ax.step(front_df["latency_ratio_b1"], front_df["quality"], where="post", color="black", linewidth=1,
                label="quality/latency front")
        on3 = df[df["on_front"].fillna(False).astype(bool)]
        ax.scatter(on3["latency_ratio_b1"], on3["quality"], s=120, facecolors="none", edgecolors="black",
                   label="front incl. params", zorder=4)
        ax.axvline(1.0, linestyle=":", color="grey", linewidth=1)
        ax.set(xlabel="latency / base model at batch 1 (LoRA, IA3 merged; ±1 std)",
               ylabel=str(df["quality_metric"].iloc[0]), title=f"{study}: {task}")
        ax.legend(fontsize="small")
        save(fig, _slug("pareto", study, task))
    if not written:
        progress("no evaluated runs with quality and latency: no plots written")
    return written


def write_study_report(db_path: Path, study: str, plots_dir: Path, tables_dir: Path) -> None:
    """One study's plots (PNG and SVG) and its rows of every report view (CSV), for Snakemake's report."""
    from .store import connect_readonly

    con = connect_readonly(db_path)
    write_plots(con, plots_dir, study=study)
    tables_dir.mkdir(parents=True, exist_ok=True)
    for view in REPORT_VIEWS:
        table = con.execute(f"SELECT * FROM {view} WHERE study = ?", [study]).df()
        table.to_csv(tables_dir / f"{view}.csv", index=False)
