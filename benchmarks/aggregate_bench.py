"""Time aggregate() and the views on 10,000 synthetic runs, against plain pandas over the same JSON.

    python benchmarks/aggregate_bench.py [--seeds 10] [--dir DIR]

20 tasks x 50 configurations (full, bitfit, 8 methods x 6 budgets) x --seeds seeds; 10 seeds give
10,000 runs (30,000 JSON files). Files are written once and then read warm from the page cache by
every contender, so the times compare parsing and loading, not the disk.
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import pandas as pd

from peftlab.results import VIEWS, aggregate, connect_readonly
from peftlab.results.store import _read_run
from peftlab.results.synthetic import write_synthetic_grid

LANGS = ["de", "fi", "fr", "cs", "et", "lt", "lv", "ro", "tr", "zh", "ja", "ko", "ar", "he", "hi", "ru",
         "uk", "pl", "hu", "kk"]
METHODS = ["full", "bitfit", "lora", "adapter", "sparse-adapter", "prefix", "coda", "houlsby", "compacter",
           "large-sparse"]
BUDGETS = ["0.001", "0.003", "0.01", "0.03", "0.1", "0.3"]


def timed(label: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    elapsed = time.perf_counter() - start
    print(f"  {label:<58} {elapsed:8.3f} s")
    return out, elapsed


def pandas_method_comparison(run_dirs: list[Path]) -> pd.DataFrame:
    """The method_comparison view with json.load + DataFrame + groupby only."""
    runs, metrics, bench = [], [], []
    for d in run_dirs:
        tr = json.loads((d / "train.json").read_text())
        runs.append({**{k: tr[k] for k in ("run_id", "study", "task", "budget", "method", "status")},
                     "trainable_params": tr["params"]["trainable"],
                     "realised_fraction": tr["params"]["realised_fraction"]})
        if (d / "eval.json").exists():
            ev = json.loads((d / "eval.json").read_text())
            metrics += [{"run_id": ev["run_id"], "metric": m["metric"], "value": m["value"]}
                        for m in ev["metrics"] if ev["split"] == "test" and "layer" not in m]
        if (d / "bench.json").exists():
            be = json.loads((d / "bench.json").read_text())
            bench += [{"run_id": be["run_id"], "batch_size": m["batch_size"],
                       "latency": m["latency_ms_median"]}
                      for m in be["measurements"]
                      if m["task"] == "generate" and m["batch_size"] in (1, 16) and m.get("deployed", True)]
    runs_df = pd.DataFrame(runs).set_index("run_id")
    q = pd.DataFrame(metrics).pivot_table(index="run_id", columns="metric", values="value")
    q = q[["bleu", "chrf", "ter"]]
    lat = pd.DataFrame(bench).pivot_table(index="run_id", columns="batch_size", values="latency")
    lat.columns = [f"latency_ms_b{b}" for b in lat.columns]
    df = runs_df.join(q).join(lat)
    df.loc[df["status"] != "ok", ["bleu", "chrf", "ter", *lat.columns]] = float("nan")
    df["ok"] = df["status"] == "ok"
    keys = ["study", "task", "budget", "method"]
    out = df.groupby(keys).agg(n_seeds=("ok", "sum"), trainable_params=("trainable_params", "mean"),
                               realised_fraction=("realised_fraction", "mean"), bleu=("bleu", "mean"),
                               chrf=("chrf", "mean"), ter=("ter", "mean"),
                               latency_ms_b1=("latency_ms_b1", "mean"),
                               latency_ms_b16=("latency_ms_b16", "mean"))
    return out.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="seeds per configuration (10 -> 10,000 runs)")
    parser.add_argument("--dir", type=Path, help="work directory, kept (default: a temporary one, removed)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="peftlab-bench-"))
    root, db = work / "results", work / "results" / "results.duckdb"
    seeds = list(range(args.seeds))
    failed = [f"bench/en-{lang}/lora/0.001/seed0" for lang in LANGS]

    print(f"writing synthetic records under {root}")
    dirs, _ = timed("write JSON records", lambda: [
        d for lang in LANGS for d in write_synthetic_grid(root, study="bench", tasks=[f"en-{lang}"],
                                                          methods=METHODS, budgets=BUDGETS, seeds=seeds,
                                                          failed=failed)])
    n_files = sum(1 for d in dirs for f in ("train.json", "eval.json", "bench.json") if (d / f).exists())
    print(f"{len(dirs)} runs, {n_files} JSON files\n")

    print("DuckDB (peftlab.results.aggregate)")
    timed("parse the JSON records alone (json.loads, inside aggregate)", lambda: [_read_run(d) for d in dirs])
    counts, t_agg = timed("aggregate() into a new file", aggregate, dirs, db)
    print(f"  rows: {counts}; file {db.stat().st_size / 2**20:.1f} MiB")
    timed("aggregate() again (replace every run)", aggregate, dirs, db)
    timed("aggregate() 100 changed runs into the full file", aggregate, dirs[:100], db)
    with connect_readonly(db) as con:
        t_views = {}
        for view in VIEWS:
            start = time.perf_counter()
            n = len(con.execute(f"SELECT * FROM {view}").df())
            t_views[view] = time.perf_counter() - start
            print(f"  {f'SELECT * FROM {view} ({n} rows) -> DataFrame':<58} {t_views[view]:8.3f} s")
        duck_mc = con.execute("SELECT * FROM method_comparison").df()

    print("\npandas alone (json.load + DataFrame + groupby)")
    pd_mc, t_pd = timed("method_comparison equivalent", pandas_method_comparison, dirs)
    keys = ["study", "task", "budget", "method"]
    merged = duck_mc.merge(pd_mc, on=keys, suffixes=("", "_pd"), validate="1:1")
    worst = max((merged[c] - merged[f"{c}_pd"]).abs().max() for c in ["bleu", "chrf", "ter", "latency_ms_b1",
                                                                       "latency_ms_b16", "n_seeds"])
    print(f"  same {len(merged)} rows as the view; largest difference {worst:.2e}")

    # Many small files are read_json's weak spot: each file gets its own buffers. With schema
    # auto-detection (union_by_name) 10,000 of these files ran out of memory (18.8 GiB) in a trial,
    # so auto-detection is timed on 1,000 files and a memory limit guards the machine.
    print("\nDuckDB read_json over the same files (raw load into a table, no reshaping)")
    con = duckdb.connect(config={"memory_limit": "2GB"})
    con.execute("SET enable_progress_bar = false")
    train_files = [str(d / "train.json") for d in dirs]
    columns = "{run_id: 'VARCHAR', status: 'VARCHAR', params: 'JSON', train: 'JSON', curve: 'JSON'}"
    for n in (1000, len(train_files)):
        files = train_files[:n]
        timed(f"json.load(train.json x {n}) -> DataFrame", lambda f=files: pd.DataFrame(
            [json.loads(Path(x).read_bytes()) for x in f]))
        timed(f"read_json(train.json x {n}, columns given) -> table", lambda f=files: con.execute(
            f"CREATE OR REPLACE TABLE t AS SELECT * FROM read_json($files, columns = {columns})",
            {"files": f}))
    timed("read_json(train.json x 1000, auto-detect) -> table", lambda: con.execute(
        "CREATE OR REPLACE TABLE t AS SELECT * FROM read_json($files)", {"files": train_files[:1000]}))

    t_mc = t_agg + t_views["method_comparison"]
    print("\nsummary")
    print(f"  {'DuckDB: aggregate() + SELECT * FROM method_comparison':<58} {t_mc:8.3f} s")
    print(f"  {'pandas: json.load + DataFrame + groupby':<58} {t_pd:8.3f} s")
    print(f"  {'ratio DuckDB / pandas, first answer':<58} {t_mc / t_pd:8.2f}")
    print(f"  {'ratio pandas / DuckDB, each later answer (file built)':<58} "
          f"{t_pd / t_views['method_comparison']:8.1f}")
    if args.dir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
