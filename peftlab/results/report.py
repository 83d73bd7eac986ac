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


# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/); markers tell methods apart past 8.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#F0E442")
_MARKERS = "osD^vP*X"


def _percent(x: float, _pos: Any = None) -> str:
    return f"{x:.3g}%"


def _seeds_label(n_seeds: Sequence[int]) -> str:
    """What a point is: the mean over how many seeds, and what its bars are (none with one seed)."""
    lo, hi = int(min(n_seeds)), int(max(n_seeds))
    if hi == 1:
        return "1 seed: no spread"
    n = f"{lo}" if lo == hi else f"{lo}-{hi} (n at points)"
    return f"mean over {n} seeds, ±1 std"


def _n(row: Any, vary: bool) -> str:
    return f" n={int(row['n_seeds'])}" if vary else ""


def write_plots(con: duckdb.DuckDBPyConnection, out_dir: Path | str,
                progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
                study: str | None = None) -> list[Path]:
    """Write, per (study, task), quality vs budget and the quality/latency Pareto front as PNG and SVG
    (latency as the ratio to the base model, with its spread).

    Every configuration is a point at its realised trainable fraction (methods without a size knob too),
    labelled with its method; `study` restricts the plots to one study (the default draws every study).
    """
    import matplotlib  # imported here so queries and tables start fast

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import (
        FuncFormatter,
        LogLocator,
        MaxNLocator,
        NullFormatter,
        PercentFormatter,
        ScalarFormatter,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    only = "" if study is None else " AND study = $study"
    args = {} if study is None else {"study": study}
    qvb = con.execute(f"SELECT * FROM quality_vs_budget WHERE quality_mean IS NOT NULL{only}", args).df()
    par = con.execute(
        "SELECT p.*, q.n_seeds, q.quality_std FROM pareto p "
        "LEFT JOIN quality_vs_budget q USING (study, task, method, budget) "
        "WHERE p.quality IS NOT NULL AND p.latency_ratio_b1 IS NOT NULL"
        + ("" if study is None else " AND p.study = $study"),
        args).df()
    methods = sorted(set(qvb["method"]) | set(par["method"]))
    colour = {m: OKABE_ITO[i % len(OKABE_ITO)] for i, m in enumerate(methods)}
    marker = {m: _MARKERS[(i // len(OKABE_ITO) + i) % len(_MARKERS)] for i, m in enumerate(methods)}
    written: list[Path] = []

    def save(fig: Any, stem: str) -> None:
        for ext in ("png", "svg"):
            path = out_dir / f"{stem}.{ext}"
            progress(f"writing {path}")
            fig.savefig(path, dpi=120, bbox_inches="tight", pad_inches=0.15)
            written.append(path)
        plt.close(fig)

    def label_points(ax: Any, points: list[tuple[str, float, float, str]]) -> None:
        """Method labels beside their points; points drawn on the same spot share one label, and a label that
        would overlap an earlier one moves up (call once the axes' scales are set)."""
        spots: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for text, x, y, c in points:
            spots.setdefault((f"{x:.3g}", f"{y:.3g}"), []).append((text, c))
        ax.autoscale_view()
        placed: list[tuple[float, float, float]] = []  # (x, y, width) of labels placed, in points
        to_points = 72 / ax.figure.dpi
        for (x, y), texts in sorted(spots.items(), key=lambda kv: (float(kv[0][0]), float(kv[0][1]))):
            text = ", ".join(t for t, _ in texts)
            px, py = (v * to_points for v in ax.transData.transform((float(x), float(y))))
            dy = 4.0
            while any(abs(px - qx) < max(qw, 4.2 * len(text)) and abs(py + dy - qy) < 9 for qx, qy, qw in placed):
                dy += 9
            placed.append((px, py + dy, 4.2 * len(text)))
            ax.annotate(text, (float(x), float(y)), xytext=(5, dy), textcoords="offset points", fontsize=7,
                        color=texts[0][1] if len(texts) == 1 else "black")

    for (study_, task), df in qvb.groupby(["study", "task"], sort=True):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        df = df.assign(x=100 * df["realised_fraction"].fillna(df["budget_target"]))
        vary = df["n_seeds"].nunique() > 1
        metric, n_seeds = df["quality_metric"].iloc[0], df["n_seeds"]
        points = []
        # A model that trains nothing (the un-adapted base) has no place on a log axis: a reference line.
        for _, row in df[~(df["x"] > 0)].iterrows():
            ax.axhline(row["quality_mean"], linestyle=":", color=colour[row["method"]],
                       label=f"{row['method']} (nothing trained)")
        df = df[df["x"] > 0]
        for method, m in df.groupby("method"):
            m = m.sort_values("x")
            knobbed = m["budget_target"].notna().all()
            ax.errorbar(m["x"], m["quality_mean"], yerr=m["quality_std"].fillna(0), marker=marker[method],
                        linestyle="-" if knobbed and len(m) > 1 else "none", capsize=3, color=colour[method],
                        label=method if knobbed else f"{method} (no size knob)", zorder=3)
            for i, (_, row) in enumerate(m.iterrows()):
                if vary or i == len(m) - 1:  # the method's name once, at its largest budget
                    text = (method if i == len(m) - 1 else "") + _n(row, vary)
                    points.append((text.strip(), row["x"], row["quality_mean"], colour[method]))
        xs = df["x"]
        if len(xs) and xs.max() / xs.min() > 10:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10))  # decades only: labels never collide
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(FuncFormatter(_percent))
        else:  # decimals follow the axis range, so close ticks do not print the same label
            ax.xaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=None))
        ax.margins(x=0.12, y=0.12)
        label_points(ax, points)
        ax.set(xlabel="trainable parameters, % of the base model (realised)",
               ylabel=f"{metric} ({_seeds_label(n_seeds)})", title=f"{study_}: {task}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        save(fig, _slug("quality_vs_budget", study_, task))

    # Latency is the ratio to the base model timed beside each run (absolute ms move with the machine's load),
    # of the deployed variant (LoRA/IA3 merged); the bars are +-1 std of the per-repeat ratios (CV x ratio).
    for (study_, task), df in par.groupby(["study", "task"], sort=True):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        points = []
        vary = df["n_seeds"].nunique() > 1
        for method, m in df.groupby("method"):
            ax.errorbar(m["latency_ratio_b1"], m["quality"], xerr=(m["latency_ratio_b1"] * m["latency_ratio_cv_b1"])
                        .fillna(0), yerr=m["quality_std"].fillna(0), fmt=marker[method], capsize=3,
                        color=colour[method], label=method, zorder=3)
            for _, row in m.iterrows():
                text = method if row["budget"] == "none" else f"{method} {100 * float(row['budget']):.3g}%"
                text += _n(row, vary)
                points.append((text, row["latency_ratio_b1"], row["quality"], colour[method]))
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
        ax.scatter(on3["latency_ratio_b1"], on3["quality"], s=140, facecolors="none", edgecolors="black",
                   label="front incl. params", zorder=4)
        ax.axvline(1.0, linestyle=":", color="grey", linewidth=1, label="base model")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.xaxis.set_major_formatter(ScalarFormatter(useOffset=False))  # enough decimals to tell ticks apart
        ax.margins(x=0.2, y=0.12)  # room for the labels of the outermost points
        label_points(ax, points)
        ax.grid(True, alpha=0.3)
        ax.set(xlabel="latency / base model (×), batch 1 (LoRA, IA3 merged; bars ±1 std of the repeats)",
               ylabel=f"{df['quality_metric'].iloc[0]} ({_seeds_label(df['n_seeds'])})",
               title=f"{study_}: {task}")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        save(fig, _slug("pareto", study_, task))
    if not written:
        progress("no evaluated runs with quality and latency: no plots written")
    return written


def _html_table(df: pd.DataFrame) -> str:
    df = df.apply(lambda c: c.fillna("") if c.dtype == object else c)  # to_html's na_rep misses None
    return df.to_html(index=False, na_rep="", border=0, classes="peftlab", float_format=lambda v: f"{v:.4g}",
                      escape=True)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; color: #222; }}
table.peftlab {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
table.peftlab th, table.peftlab td {{ padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right;
    white-space: nowrap; }}
table.peftlab th {{ background: #f3f3f3; position: sticky; top: 0; }}
img {{ max-width: 100%; }} .note {{ color: #555; max-width: 60em; }}
</style></head><body>
{body}
</body></html>
"""


def best_by_budget(con: duckdb.DuckDBPyConnection, study: str) -> pd.DataFrame:
    """Per task and budget: the method with the highest mean quality, beside the runner-up and full fine-tuning."""
    q = con.execute("SELECT * FROM quality_vs_budget WHERE study = ? AND quality_mean IS NOT NULL", [study]).df()
    rows = []
    for (task, budget), g in q.groupby(["task", "budget"], sort=False):
        g = g.sort_values("quality_mean", ascending=False)
        n_methods, top = len(g), g.iloc[0]
        tied = g[g["quality_mean"] == top["quality_mean"]]  # a tie names every method that shares the best mean
        g = pd.concat([tied.head(1), g[g["quality_mean"] < top["quality_mean"]]])
        best = top["method"] if len(tied) == 1 else "tie: " + ", ".join(tied["method"])
        shown = "none (no size knob)" if budget == "none" else f"{100 * float(budget):.3g}%"
        rows.append({"task": task, "budget": shown,
                     "budget_target": top["budget_target"], "best method": best,
                     "metric": top["quality_metric"], "mean": top["quality_mean"], "std": top["quality_std"],
                     "seeds": top["n_seeds"], "vs full (paired by seed)": top["delta_vs_full_mean"],
                     "runner-up": g.iloc[1]["method"] if len(g) > 1 else "",
                     "runner-up mean": g.iloc[1]["quality_mean"] if len(g) > 1 else None,
                     "methods compared": n_methods})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["task", "budget_target"], na_position="first").drop(columns="budget_target")


def study_tables_html(con: duckdb.DuckDBPyConnection, study: str) -> dict[str, str]:
    """{view: an HTML page of the study's rows of it}; views without rows for the study are left out."""
    from .schema import VIEWS

    pages = {}
    for view in REPORT_VIEWS:
        table = con.execute(f"SELECT * FROM {view} WHERE study = ?", [study]).df()
        if table.empty:
            continue
        body = (f"<h2>{view}</h2><p class='note'>{VIEWS[view][0]} Query it with "
                f"<code>peftlab query \"SELECT * FROM {view} WHERE study = '{study}'\"</code>.</p>"
                + _html_table(table.drop(columns="study")))
        pages[view] = _PAGE.format(title=f"{study}: {view}", body=body)
    return pages


def summary_html(con: duckdb.DuckDBPyConnection, study: str, pareto_pngs: Sequence[Path]) -> str:
    """The study's summary page: best method per task and budget, the reproduction view, the Pareto plots
    (embedded, so the page stands alone)."""
    import base64
    import html

    parts = [f"<h1>Study {html.escape(study)}</h1>"]
    best = best_by_budget(con, study)
    parts.append("<h2>Best method per task and budget</h2>")
    if best.empty:
        parts.append("<p>No evaluated runs yet.</p>")
    else:
        parts.append("<p class='note'>Highest mean test quality (chrF for translation, accuracy for classification) "
                     "among the methods at each trainable-parameter budget (the target fraction of the base model); "
                     "methods without a size knob (full fine-tuning, BitFit, IA3) are compared among themselves. "
                     "<em>vs full</em>: mean difference to full fine-tuning of the same seed.</p>")
        parts.append(_html_table(best))
    repro = con.execute("SELECT claim_id, claim, statistic, expected, low, high, measured, gap, status, n_tasks, "
                        "n_runs, source, note FROM reproduction WHERE study = ?", [study]).df()
    if not repro.empty:
        counts = repro["status"].value_counts()
        parts.append("<h2>Reproduction of the paper's claims</h2><p class='note'>"
                     + ", ".join(f"{n} {html.escape(s)}" for s, n in counts.items())
                     + " (measured within [low, high]: agrees).</p>")
        parts.append(_html_table(repro))
    if pareto_pngs:
        parts.append("<h2>Quality against latency (Pareto front)</h2><p class='note'>Latency is the batch-1 ratio "
                     "to the base model timed beside each run; circled: on the front of quality, latency and "
                     "trainable parameters.</p>")
        for png in pareto_pngs:
            data = base64.b64encode(Path(png).read_bytes()).decode()
            parts.append(f"<p><img alt='{html.escape(Path(png).stem)}' src='data:image/png;base64,{data}'></p>")
    return _PAGE.format(title=f"{study}: summary", body="\n".join(parts))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_study_report(db_path: Path, study: str, out_dir: Path) -> None:
    """One study's report for Snakemake's: summary.html, plots per kind (quality_vs_budget/<task>.png,
    pareto/<task>.png, with SVGs) and an HTML page per report view that has rows for the study (tables/)."""
    import shutil
    import tempfile

    from .store import connect_readonly

    con = connect_readonly(db_path)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            written = write_plots(con, tmp, study=study)
            for kind in ("quality_vs_budget", "pareto"):
                (out_dir / kind).mkdir(parents=True, exist_ok=True)
                for path in written:
                    prefix = _slug(kind, study) + "_"
                    if path.name.startswith(prefix):
                        shutil.move(path, out_dir / kind / path.name.removeprefix(prefix))
        tables = out_dir / "tables"
        tables.mkdir(parents=True, exist_ok=True)
        for view, page in study_tables_html(con, study).items():
            _write_text(tables / f"{view}.html", page)
        _write_text(out_dir / "summary.html", summary_html(con, study, sorted((out_dir / "pareto").glob("*.png"))))
    finally:
        con.close()
