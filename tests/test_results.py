"""results.duckdb: schema, views checked against pandas over the same JSON records, idempotent loads."""

import json
import math
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from peftlab.results import TABLES, VIEWS, aggregate, connect_readonly, find_run_dirs
from peftlab.results.store import replace_study_rows
from peftlab.results.synthetic import write_synthetic_grid

FAILED = "demo/en-fi/adapter/0.01/seed1"
NO_BENCH = "demo/en-de/lora/0.1/seed1"
GRID = dict(study="demo", tasks=["en-de", "en-fi"], methods=["full", "lora", "adapter", "sparse-adapter"],
            budgets=["0.01", "0.1"], seeds=[0, 1])
N_RUNS = 2 * (1 + 3 * 2) * 2  # tasks x (full + 3 methods x 2 budgets) x seeds


def make_grid(root: Path) -> list[Path]:
    dirs = write_synthetic_grid(root, failed=[FAILED], **GRID)
    (root / NO_BENCH.replace("/", "/runs/", 1) / "bench.json").unlink()
    return dirs


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("results")
    dirs = make_grid(root)
    aggregate(dirs, root / "results.duckdb")
    return root / "results.duckdb", dirs


def query(db_path: Path, sql: str) -> pd.DataFrame:
    with connect_readonly(db_path) as con:
        return con.execute(sql).df()


def count(db_path: Path, table: str) -> int:
    with connect_readonly(db_path) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def reference_runs(dirs: list[Path]) -> pd.DataFrame:
    """One row per run computed with pandas alone, the way run_summary should."""
    rows = []
    for d in dirs:
        tr = json.loads((d / "train.json").read_text())
        row = {k: tr[k] for k in ("study", "task", "method", "budget", "seed", "status")}
        params = tr["params"]
        row.update(trainable_params=params["trainable"], realised_fraction=params["realised_fraction"])
        if (d / "eval.json").exists():
            row.update({m["metric"]: m["value"] for m in json.loads((d / "eval.json").read_text())["metrics"]
                        if "layer" not in m})
        if (d / "bench.json").exists():
            for m in json.loads((d / "bench.json").read_text())["measurements"]:
                if m["task"] == "generate" and m["deployed"]:  # LoRA's merged row, the only row of the others
                    row[f"latency_ms_b{m['batch_size']}"] = m["latency_ms_median"]
                    row[f"latency_ratio_b{m['batch_size']}"] = m["ratio_to_base"]
                    row[f"latency_ratio_cv_b{m['batch_size']}"] = m["ratio_cv"]
                    row["latency_merged"] = m["merged"]
        rows.append(row)
    return pd.DataFrame(rows)


def test_schema_is_documented(db: tuple[Path, list[Path]]) -> None:
    db_path, _ = db
    cols = query(db_path, "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE NOT internal")
    tables = cols[cols["table_name"].isin(list(TABLES))]
    assert len(tables) == sum(len(c) for _, c in TABLES.values())
    assert tables["comment"].notna().all()
    views = query(db_path, "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal")
    assert set(views["view_name"]) == set(VIEWS) and views["comment"].notna().all()
    assert query(db_path, "SELECT comment FROM duckdb_tables() WHERE NOT internal")["comment"].notna().all()


def test_every_budget_label_has_its_realised_fraction_beside_it(db: tuple[Path, list[Path]]) -> None:
    """A budget label is the target; what trained is within the solver's tolerance of it, not equal to it. Every
    view that shows a label shows the realised fraction next to budget_target (run_metrics, long format, has it
    as the metric realised_fraction), and its value is the mean over the configuration's ok runs' records."""
    db_path, _ = db
    cols = query(db_path, "SELECT table_name, column_name, column_index FROM duckdb_columns() WHERE NOT internal")
    for view in set(VIEWS) - {"run_metrics", "reproduction"}:
        names = list(cols[cols["table_name"] == view].sort_values("column_index")["column_name"])
        if "budget" not in names:
            continue
        assert "budget_target" in names, view
        after = names[names.index("budget_target") + 1]
        assert after.endswith("realised_fraction"), (view, names)
    runs = query(db_path, "SELECT task, method, budget, avg(realised_fraction) AS by_hand FROM runs "
                          "WHERE status = 'ok' GROUP BY ALL")
    for view in ("method_comparison", "quality_vs_budget", "pareto", "training_cost"):
        got = query(db_path, f"SELECT task, method, budget, realised_fraction AS realised FROM {view}")
        merged = got.merge(runs, on=["task", "method", "budget"], validate="one_to_one")
        assert len(merged) and (merged["realised"] - merged["by_hand"]).abs().max() < 1e-12, view


def test_counts_and_failed_run(db: tuple[Path, list[Path]]) -> None:
    db_path, _ = db
    assert count(db_path, "runs") == N_RUNS
    n_lora = len(GRID["tasks"]) * len(GRID["budgets"]) * len(GRID["seeds"]) - 1  # one has no bench.json
    # 4 rows (generate, forward x batch 1, 16) per run; LoRA's twice (unmerged, merged); failed/no-bench: none
    assert count(db_path, "benchmarks") == (N_RUNS - 2) * 4 + n_lora * 4
    merged = query(db_path, "SELECT r.method, b.merged, b.deployed, count(*) AS n FROM benchmarks b "
                            "JOIN runs r USING (run_id) GROUP BY ALL ORDER BY ALL")
    assert merged[merged["merged"]]["method"].unique().tolist() == ["lora"]
    assert merged[~merged["deployed"]]["method"].unique().tolist() == ["lora"]  # unmerged LoRA: recorded, not used
    assert count(db_path, "evaluations") == (N_RUNS - 1) * 5  # bleu, chrf, ter, cka x 2 layers
    failed = query(db_path, f"SELECT * FROM run_summary WHERE run_id = '{FAILED}'").iloc[0]
    assert failed["status"] == "failed" and "out of memory" in failed["error"]
    assert pd.isna(failed["chrf"]) and pd.isna(failed["latency_ms_b1"])
    assert query(db_path, "SELECT DISTINCT status FROM runs ORDER BY 1").status.tolist() == ["failed", "ok"]
    assert query(db_path, f"SELECT eval_status FROM runs WHERE run_id = '{FAILED}'").iloc[0, 0] is None
    info = query(db_path, f"SELECT eval_info->>'hypotheses_path' AS p FROM runs WHERE run_id = '{NO_BENCH}'")
    assert info["p"].item() == f"results/{NO_BENCH}/hyp.txt"


def test_method_comparison_matches_pandas(db: tuple[Path, list[Path]]) -> None:
    db_path, dirs = db
    ref = reference_runs(dirs)
    ok = ref[ref["status"] == "ok"]
    cols = ["realised_fraction", "bleu", "chrf", "ter", "latency_ms_b1", "latency_ms_b16"]
    keys = ["study", "task", "budget", "method"]
    expected = ok.groupby(keys)[cols].mean().join(ok.groupby(keys).size().rename("n_seeds"))
    # ratios: geometric mean over seeds; their spread: the largest CV of the seeds
    for b in (1, 16):
        expected[f"latency_ratio_b{b}"] = ok.groupby(keys)[f"latency_ratio_b{b}"].apply(
            lambda r: math.exp(r.dropna().map(math.log).mean()))
        expected[f"latency_ratio_cv_b{b}"] = ok.groupby(keys)[f"latency_ratio_cv_b{b}"].max()
    expected = expected.reset_index()
    cols += ["latency_ratio_b1", "latency_ratio_b16", "latency_ratio_cv_b1", "latency_ratio_cv_b16"]
    got = query(db_path, "SELECT * FROM method_comparison")
    assert len(got) == 2 * 7  # one row per (task, config)
    merged = got.merge(expected, on=keys, suffixes=("", "_ref"), validate="1:1")
    assert len(merged) == len(got)
    for c in [*cols, "n_seeds"]:
        assert merged[c].to_numpy() == pytest.approx(merged[f"{c}_ref"].to_numpy(), nan_ok=True), c
    assert got.loc[got["budget"] == "none", "budget_target"].isna().all()
    row = got.set_index(keys).loc[("demo", "en-fi", "0.01", "adapter")]
    assert (row["n_seeds"], row["n_failed"]) == (1, 1)
    # the run without bench.json leaves latency to the seed that has one
    row = got.set_index(keys).loc[("demo", "en-de", "0.1", "lora")]
    seed0 = ok.set_index(keys + ["seed"]).loc[("demo", "en-de", "0.1", "lora", 0)]
    assert row["latency_ms_b1"] == pytest.approx(seed0["latency_ms_b1"])
    # LoRA's latency is its merged figure (as fast as the base model in the synthetic records), and says so
    assert row["latency_merged"] and row["latency_ratio_b1"] == pytest.approx(1.0)
    assert not got[got["method"] != "lora"]["latency_merged"].any()


def test_quality_vs_budget_deltas_to_full(db: tuple[Path, list[Path]]) -> None:
    db_path, dirs = db
    ref = reference_runs(dirs)
    ok = ref[ref["status"] == "ok"]
    full = ok[ok["method"] == "full"].set_index(["task", "seed"])["chrf"]
    got = query(db_path, "SELECT * FROM quality_vs_budget").set_index(["task", "method", "budget"])
    assert (got["quality_metric"] == "chrf").all()
    assert got.xs("full", level="method")["delta_vs_full_mean"].abs().max() == pytest.approx(0)
    for (task, method, budget), g in ok.groupby(["task", "method", "budget"]):
        deltas = g["chrf"].to_numpy() - full.loc[[(task, s) for s in g["seed"]]].to_numpy()
        row = got.loc[(task, method, budget)]
        assert row["delta_vs_full_mean"] == pytest.approx(deltas.mean())
        assert row["quality_std"] == pytest.approx(g["chrf"].std(), nan_ok=True)
        assert row["n_seeds"] == row["n_paired"] == len(g)


def test_pareto_front(db: tuple[Path, list[Path]]) -> None:
    db_path, _ = db
    got = query(db_path, "SELECT * FROM pareto")
    assert len(got) == 14
    for _, a in got.iterrows():  # brute force: dominated by nobody in the same task
        others = got[(got["task"] == a["task"])]
        dominated = ((others["quality"] >= a["quality"]) & (others["latency_ratio_b1"] <= a["latency_ratio_b1"])
                     & (others["trainable_params"] <= a["trainable_params"])
                     & ((others["quality"] > a["quality"]) | (others["latency_ratio_b1"] < a["latency_ratio_b1"])
                        | (others["trainable_params"] < a["trainable_params"]))).any()
        assert a["on_front"] == (not dominated), (a["task"], a["method"], a["budget"])
    # sparse-adapter has the adapter's size and speed but lower quality in the synthetic model
    assert not got[got["method"] == "sparse-adapter"]["on_front"].any()
    assert got[got["method"] == "full"]["on_front"].all()


def test_study_report_tables_are_html_and_empty_views_are_left_out(db: tuple[Path, list[Path]],
                                                                   tmp_path: Path) -> None:
    from io import StringIO

    from peftlab.results.report import write_study_report
    from peftlab.results.schema import REPORT_VIEWS

    db_path, _ = db
    write_study_report(db_path, "demo", tmp_path)
    # one plot per task and kind, named by task (the report's label)
    assert sorted(p.name for p in (tmp_path / "quality_vs_budget").glob("*.png")) == ["en-de.png", "en-fi.png"]
    assert sorted(p.name for p in (tmp_path / "pareto").glob("*.png")) == ["en-de.png", "en-fi.png"]
    # the synthetic grid has no sparse or CoDA family, no translation significance tests, no claims and no
    # study_tasks: those five views are empty for it and get no page
    pages = {p.stem: p.read_text() for p in (tmp_path / "tables").iterdir()}
    assert set(pages) == set(REPORT_VIEWS) - {"sparse_vs_dense", "coda_speedup", "significance", "reproduction",
                                              "quality_by_distance"}
    for view, page in pages.items():
        assert page.startswith("<!DOCTYPE html>")
        expected = query(db_path, f"SELECT * FROM {view} WHERE study = 'demo'").drop(columns="study")
        [table] = pd.read_html(StringIO(page), flavor="lxml", keep_default_na=False,
                               converters={c: str for c in expected.columns})
        assert list(table.columns) == list(expected.columns) and len(table) == len(expected), view
        for column in expected.columns:  # the same rows, floats to the 4 significant digits shown
            want, got = expected[column], table[column]
            if pd.api.types.is_float_dtype(want):
                assert all((math.isnan(w) and g == "") or math.isclose(w, float(g), rel_tol=1e-3, abs_tol=1e-9)
                           for w, g in zip(want, got, strict=True)), (view, column)
            else:
                assert [("" if v is None or v != v else str(v)) for v in want] == list(got), (view, column)
    # summary: by the synthetic model, adapters lose least per decade of budget, full fine-tuning is best
    [best, *_] = pd.read_html(StringIO((tmp_path / "summary.html").read_text()), flavor="lxml")
    assert [(r.task, r.budget, r._3) for r in best.itertuples()] == [
        (t, b, "full" if b.startswith("none") else "adapter") for t in ("en-de", "en-fi")
        for b in ("none (no size knob)", "1%", "10%")]
    assert "data:image/png;base64," in (tmp_path / "summary.html").read_text()  # the Pareto plots, embedded


def test_training_cost_and_seed_spread(db: tuple[Path, list[Path]]) -> None:
    db_path, _ = db
    cost = query(db_path, "SELECT * FROM training_cost").set_index(["task", "method", "budget"])
    assert cost.loc[("en-fi", "adapter", "0.01"), "n_seeds"] == 1  # the failed run is left out
    assert cost.loc[("en-de", "full", "none"), "time_to_best_s_mean"] == pytest.approx(60.5)
    assert cost.loc[("en-de", "full", "none"), "time_to_best_s_std"] == pytest.approx(math.sqrt(0.5))
    assert (cost["peak_memory_mb_max"] >= cost["peak_memory_mb_mean"]).all()
    spread = query(db_path, "SELECT * FROM seed_spread WHERE task = 'en-de' AND method = 'lora' "
                            "AND budget = '0.01'")
    assert sorted(spread["metric"].unique()) == ["bleu", "chrf", "cka", "ter"]
    assert spread[spread["metric"] == "cka"]["layer"].tolist() == ["0", "1"]  # per layer, not blended
    chrf = spread[spread["metric"] == "chrf"].iloc[0]
    assert chrf["n_seeds"] == 2 and chrf["std"] == pytest.approx(0.2 / math.sqrt(2))


def test_runs_carry_the_training_measurements_of_train_json(db: tuple[Path, list[Path]]) -> None:
    db_path, dirs = db
    runs = query(db_path, "SELECT * FROM runs").set_index("run_id")
    checked = 0
    for d in dirs:
        tr = json.loads((d / "train.json").read_text())
        row, t = runs.loc[tr["run_id"]], tr["train"]
        memory = t.get("memory", {})
        expected = {"memory_avg_mb": memory.get("avg_mb"), "memory_p99_mb": memory.get("p99_mb"),
                    "memory_max_mb": memory.get("max_mb"), "memory_source": memory.get("source"),
                    **{k: t.get(k) for k in ("tokens_per_s", "model_flops", "mfu", "precision", "devices")},
                    "adapter_bytes": tr.get("adapter_bytes")}
        for column, value in expected.items():
            assert (pd.isna(row[column]) if value is None else row[column] == value), (tr["run_id"], column)
        checked += "memory" in t and t["mfu"] is not None
    assert checked > 0 and runs["mfu"].isna().any()  # values and NULLs both went through
    cost = query(db_path, "SELECT * FROM training_cost").set_index(["task", "method", "budget"])
    ok = runs[runs["status"] == "ok"]
    lora = ok[(ok["task"] == "en-de") & (ok["method"] == "lora") & (ok["budget"] == "0.01")]
    row = cost.loc[("en-de", "lora", "0.01")]
    assert row["memory_avg_mb_mean"] == pytest.approx(lora["memory_avg_mb"].mean())
    assert row["mfu_mean"] == pytest.approx(lora["mfu"].mean())  # NULLs (seed 0) are left out, as pandas does
    assert row["adapter_bytes_mean"] == pytest.approx(lora["adapter_bytes"].mean())


def test_idempotent_incremental_and_replacing(tmp_path: Path) -> None:
    db_path = tmp_path / "results.duckdb"
    dirs = make_grid(tmp_path)
    tables = ["runs", "training_curves", "evaluations", "benchmarks"]
    aggregate(dirs[:10], db_path)
    aggregate(dirs, db_path)
    first = {t: count(db_path, t) for t in tables}
    assert aggregate(dirs, db_path) == first  # every row of each run, loaded again
    assert {t: count(db_path, t) for t in tables} == first

    # another study's run: exactly its rows are added, the demo study stays
    new = write_synthetic_grid(tmp_path, study="other", tasks=["en-de"], methods=["lora"], budgets=["0.1"],
                               seeds=[3])
    added = aggregate(new, db_path)
    assert {t: count(db_path, t) for t in tables} == {t: first[t] + added[t] for t in tables}
    assert added["runs"] == 1 and added["evaluations"] == 5 and added["benchmarks"] == 8  # LoRA: merged too
    assert set(query(db_path, "SELECT DISTINCT study FROM runs")["study"]) == {"demo", "other"}

    # a rerun that changed: its rows are replaced, not duplicated
    train = new[0] / "train.json"
    rec = json.loads(train.read_text())
    rec["curve"] = rec["curve"][:2]
    rec["status"], rec["error"] = "failed", "preempted"
    train.write_text(json.dumps(rec))
    (new[0] / "eval.json").unlink()
    aggregate(new, db_path)
    row = query(db_path, "SELECT status, error FROM runs WHERE study = 'other'")
    assert row.values.tolist() == [["failed", "preempted"]]
    assert count(db_path, "training_curves") == first["training_curves"] + 2
    assert count(db_path, "evaluations") == first["evaluations"]
    assert count(db_path, "runs") == first["runs"] + 1


def demo_rows(db_path: Path, name: str) -> pd.DataFrame:
    """The demo study's rows of a table or view, in a canonical order, without the load time."""
    df = query(db_path, f"SELECT * FROM {name}").drop(columns=["loaded_at"], errors="ignore")
    df = df[df["study"] == "demo"] if "study" in df else df[~df["run_id"].str.startswith("other/")]
    keys = [repr(tuple(row)) for row in df.itertuples(index=False)]
    return df.iloc[sorted(range(len(df)), key=keys.__getitem__)].reset_index(drop=True)


def test_the_database_mirrors_the_studys_current_grid(tmp_path: Path) -> None:
    """A method removed from the grid leaves no row in any table or view; compared with a database built
    from the smaller grid alone, and another study's rows stay."""
    db_path, fresh = tmp_path / "results.duckdb", tmp_path / "fresh.duckdb"
    dirs = make_grid(tmp_path)
    other = write_synthetic_grid(tmp_path, study="other", tasks=["en-de"], methods=["adapter"], budgets=["0.1"],
                                 seeds=[0])
    aggregate(other, db_path, study="other")
    aggregate(dirs, db_path, study="demo")
    is_adapter = [d.parts[-3] == "adapter" for d in dirs]
    adapter_run, lora_run = (next(str(d.relative_to(tmp_path)).replace("/runs/", "/")
                                  for d in dirs if d.parts[-3] == m) for m in ("adapter", "lora"))
    replace_study_rows(db_path, "mt_significance", "demo", pd.DataFrame(
        [{"study": "demo", "run_id": run, "baseline_run_id": "demo/en-de/full/none/seed0", "metric": "chrf"}
         for run in (adapter_run, lora_run)]))
    assert count(db_path, "method_comparison") > 0 and any(is_adapter)

    kept = [d for d, gone in zip(dirs, is_adapter, strict=True) if not gone]  # the folders stay on disk
    aggregate(kept, db_path, study="demo")
    aggregate(kept, fresh, study="demo")
    for name in [*TABLES, *VIEWS]:
        if name not in ("mt_significance", "significance"):  # rows injected above into db_path only
            pd.testing.assert_frame_equal(demo_rows(db_path, name), demo_rows(fresh, name), obj=name)
    assert query(db_path, "SELECT run_id FROM mt_significance")["run_id"].tolist() == [lora_run]
    assert query(db_path, "SELECT count(*) AS n FROM runs WHERE method = 'adapter' AND study = 'demo'")["n"][0] == 0
    assert query(db_path, "SELECT count(*) AS n FROM method_comparison WHERE method = 'adapter'")["n"][0] == 1
    assert count(db_path, "runs") == len(kept) + 1  # the other study's adapter run stays
    with pytest.raises(ValueError, match="another study"):
        aggregate([*kept, *other], db_path, study="demo")


def test_a_failed_data_job_skips_its_runs_and_the_rest_of_the_study_is_loaded(tmp_path: Path) -> None:
    """One task's shards fail: the job records the failure in its manifest, that task's runs record `skipped`
    down the chain (train -> eval, bench) as the workflow scripts do, and aggregation loads every run."""
    from peftlab.data import DataError
    from peftlab.status import failure_recorded, record_skipped, upstream_failure

    dirs = make_grid(tmp_path)
    manifest = tmp_path / "demo" / "shards" / "tiny" / "en-fi" / "manifest.json"
    with failure_recorded(manifest, {"stage": "build_shards", "task": "en-fi"}, tmp_path / "shards.log"):
        raise DataError("corpus for en-fi has no training pairs left")
    assert json.loads(manifest.read_text())["status"] == "failed"
    fi = [d for d in dirs if d.parts[-4] == "en-fi"]
    for run_dir in fi:  # what train.py, evaluate.py and benchmark.py write when an input stage failed
        run_id = str(run_dir.relative_to(tmp_path)).replace("/runs/", "/")
        for name in ("eval.json", "bench.json"):
            (run_dir / name).unlink(missing_ok=True)
        reason = upstream_failure({manifest: "build_shards"})
        record_skipped(run_dir / "train.json", {"run_id": run_id, "study": "demo", "task": "en-fi"}, reason)
        for name in ("eval.json", "bench.json"):
            record_skipped(run_dir / name, {"run_id": run_id},
                           upstream_failure({run_dir / "train.json": "training"}))
    assert upstream_failure({d / "train.json": "training" for d in dirs if d not in fi}) is None

    aggregate(dirs, tmp_path / "results.duckdb", study="demo")
    runs = query(tmp_path / "results.duckdb", "SELECT task, status, error, eval_status, bench_status, eval_error "
                                              "FROM runs")
    skipped = runs[runs.task == "en-fi"]
    assert len(skipped) == len(fi) and set(skipped.status) == {"skipped"}
    assert set(skipped.error) == {f"build_shards failed ({manifest}): DataError: corpus for en-fi has no "
                                  "training pairs left"}
    assert set(skipped.eval_status) == set(skipped.bench_status) == {"skipped"}
    assert all(e.startswith("training skipped (") and "build_shards failed" in e for e in skipped.eval_error)
    loaded = runs[runs.task == "en-de"]
    assert len(loaded) == N_RUNS // 2 and set(loaded.status) == {"ok"}
    assert set(query(tmp_path / "results.duckdb", "SELECT DISTINCT task FROM method_comparison WHERE chrf IS NOT "
                                                  "NULL")["task"]) == {"en-de"}


def test_failed_load_leaves_db_untouched(tmp_path: Path) -> None:
    db_path = tmp_path / "results.duckdb"
    dirs = make_grid(tmp_path)
    aggregate(dirs, db_path)
    before = query(db_path, "SELECT * FROM evaluations ORDER BY ALL")
    ev = dirs[0] / "eval.json"
    rec = json.loads(ev.read_text())
    rec["metrics"][0]["value"] = "not a number"  # fails inside the transaction, after the DELETEs
    ev.write_text(json.dumps(rec))
    with pytest.raises(duckdb.Error):
        aggregate(dirs, db_path)
    pd.testing.assert_frame_equal(query(db_path, "SELECT * FROM evaluations ORDER BY ALL"), before)
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert left == ["results.duckdb", "results.duckdb.lock"]  # no temporary copy or WAL left behind


def test_reader_does_not_block_writer(tmp_path: Path) -> None:
    db_path = tmp_path / "results.duckdb"
    dirs = make_grid(tmp_path)
    aggregate(dirs[:3], db_path)
    with connect_readonly(db_path) as reader:
        aggregate(dirs, db_path)  # os.replace: the open reader keeps the file it opened
        assert reader.execute("SELECT count(*) FROM runs").fetchone()[0] == 3
    assert count(db_path, "runs") == N_RUNS


def test_bad_inputs(tmp_path: Path) -> None:
    dirs = make_grid(tmp_path)
    with pytest.raises(ValueError, match="loaded twice"):
        aggregate([dirs[0], dirs[0]], tmp_path / "a.duckdb")
    train = dirs[0] / "train.json"
    train.write_text(json.dumps({**json.loads(train.read_text()), "run_id": "demo/x/y/none/seed0"}))
    with pytest.raises(ValueError, match="one run_id"):
        aggregate(dirs[:1], tmp_path / "a.duckdb")
    assert not (tmp_path / "a.duckdb").exists()


def test_missing_train_record_and_discovery(tmp_path: Path) -> None:
    dirs = make_grid(tmp_path)
    (dirs[-1] / "train.json").unlink()
    found = find_run_dirs(tmp_path)
    assert found == sorted(dirs)
    aggregate(found, tmp_path / "results.duckdb")
    row = query(tmp_path / "results.duckdb", "SELECT * FROM run_summary WHERE status = 'missing'").iloc[0]
    assert row["run_id"] == "demo/en-fi/sparse-adapter/0.1/seed1" and row["seed"] == 1
    assert row["budget_target"] == pytest.approx(0.1) and pd.isna(row["chrf"])  # stale eval.json ignored


# --- study comparisons: distance, SparseAdapter vs dense, CoDA speed-up, paired bootstrap ------------------

def write_run(root: Path, study: str, task: str, method: str, budget: str, seed: int, *, family: str,
              method_config: dict, latency_scale: float = 1.0) -> Path:
    """Synthetic records of one run, with its method family and config set as a real run writes them."""
    from peftlab.results.synthetic import synthetic_records

    records = synthetic_records(study, task, method, budget, seed)
    records["train.json"].update(method_family=family, method_config=method_config)
    for m in records["bench.json"]["measurements"]:
        for key in ("latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_ms_mean", "ratio_to_base",
                    "ratio_p10", "ratio_p90"):
            m[key] *= latency_scale
    run_dir = root / study / "runs" / task / method / budget / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, record in records.items():
        (run_dir / name).write_text(json.dumps(record))
    return run_dir


def test_sparse_vs_dense_and_coda_speedup(tmp_path: Path) -> None:
    runs = {  # method -> (family, method_config, latency scale)
        "dense": ("houlsby", {"bottleneck": 6}, 1.0),
        "sparse-40": ("sparse", {"base": "houlsby", "sparsity": 0.4, "large": False, "scoring": "snip"}, 1.0),
        "large-sparse": ("sparse", {"base": "houlsby", "sparsity": 0.4, "large": True, "scoring": "snip"}, 1.0),
        "parallel": ("parallel", {"bottleneck": 13}, 1.0),
        "coda": ("coda", {"k_ratio": 0.25, "bottleneck": 13}, 0.5),
        "lora": ("lora", {"r": 4}, 1.0),  # same budget, neither a sparse base nor an adapter: never paired
    }
    dirs = [write_run(tmp_path, "s", "en-de", m, "0.01", seed, family=f, method_config=c, latency_scale=k)
            for m, (f, c, k) in runs.items() for seed in (0, 1)]
    dirs.append(write_run(tmp_path, "s", "en-de", "sparse-x", "0.1", 0, family="sparse",  # no dense at 0.1
                          method_config={"base": "houlsby", "sparsity": 0.8}))
    db_path = tmp_path / "results.duckdb"
    aggregate(dirs, db_path)
    ref = reference_runs(dirs).set_index(["method", "seed"])

    got = query(db_path, "SELECT * FROM sparse_vs_dense ORDER BY sparse_method")
    assert list(got.sparse_method) == ["large-sparse", "sparse-40"] and set(got.dense_method) == {"dense"}
    for row in got.itertuples():
        deltas = [ref.chrf[row.sparse_method, s] - ref.chrf["dense", s] for s in (0, 1)]
        assert row.n_paired == 2 and row.delta_mean == pytest.approx(sum(deltas) / 2)
        assert row.large == (row.sparse_method == "large-sparse") and row.sparsity == pytest.approx(0.4)

    got = query(db_path, "SELECT * FROM coda_speedup")
    assert set(got.adapter_method) == {"dense", "parallel"} and set(got.batch_size) == {1, 16}
    assert len(got) == 2 * 2 * 2  # adapters x bench tasks (generate, forward) x batch sizes
    assert (got.n_paired == 2).all() and (got.k_ratio == 0.25).all()
    # from each run's ratio to the base model it was timed beside (the deployed rows: LoRA merged)
    latency = {(d.parts[-3], int(d.name.removeprefix("seed")), m["task"], m["batch_size"]): m["ratio_to_base"]
               for d in dirs for m in json.loads((d / "bench.json").read_text())["measurements"] if m["deployed"]}
    for row in got.itertuples():
        ratios = [latency[row.adapter_method, s, row.bench_task, row.batch_size]
                  / latency["coda", s, row.bench_task, row.batch_size] for s in (0, 1)]
        assert row.speedup == pytest.approx(math.sqrt(ratios[0] * ratios[1]))  # geometric mean over seeds
        assert row.speedup > 2  # CoDA's latencies were halved
        deltas = [ref.chrf["coda", s] - ref.chrf[row.adapter_method, s] for s in (0, 1)]
        assert row.quality_delta == pytest.approx(sum(deltas) / 2)


def test_quality_by_distance(db: tuple[Path, list[Path]], tmp_path: Path) -> None:
    from peftlab.results import load_study_tasks

    db_path = tmp_path / "results.duckdb"
    db_path.write_bytes(db[0].read_bytes())
    load_study_tasks(db_path, "demo", {"en-de": {"kind": "translation", "target_lang": "de", "distance": "close"},
                                       "en-fi": {"kind": "translation", "target_lang": "fi", "distance": "distant"}})
    got = query(db_path, "SELECT * FROM quality_by_distance").set_index(["distance", "method", "budget"])
    want = query(db_path, "SELECT * FROM quality_vs_budget").set_index(["task", "method", "budget"])
    assert len(got) == len(want)  # one task per distance here
    for (distance, method, budget), row in got.iterrows():
        task = {"close": "en-de", "distant": "en-fi"}[distance]
        assert row.tasks == task and row.n_tasks == 1
        assert row.quality_mean == pytest.approx(want.quality_mean[task, method, budget])
    load_study_tasks(db_path, "demo", {"en-de": {"kind": "translation", "distance": "close"},
                                       "en-fi": {"kind": "translation", "distance": "close"}})  # replaced
    got = query(db_path, "SELECT * FROM quality_by_distance WHERE method = 'lora' AND budget = '0.1'")
    assert len(got) == 1 and got.n_tasks[0] == 2 and got.tasks[0] == "en-de, en-fi"
    assert count(db_path, "study_tasks") == 2


def test_paired_significance_against_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sacrebleu.metrics import CHRF

    from peftlab.results import load_study_tasks, paired_significance, study_tables

    tested: list[list[str]] = []  # the systems of each sacrebleu test, baseline first
    paired_test = study_tables.PairedTest

    def recording_test(systems, *args, **kwargs):
        tested.append([name for name, _ in systems])
        return paired_test(systems, *args, **kwargs)

    monkeypatch.setattr(study_tables, "PairedTest", recording_test)

    references = [f"Das ist der Satz Nummer {i} über {w}." for i, w in enumerate(["Hunde", "Katzen", "Bäume"] * 20)]
    test_set = tmp_path / "test.jsonl"
    test_set.write_text("".join(json.dumps({"src": "x", "tgt": r}) + "\n" for r in references))
    near = [r.replace("Satz", "Satze") if i % 20 == 0 else r for i, r in enumerate(references)]  # 3 differ
    systems = {"full": references, "twin": near, "bad": [r[: len(r) // 3] for r in references]}
    dirs = []
    for method, hypotheses in systems.items():
        run_dir = write_run(tmp_path, "s", "en-de", method, "none", 0, family=method, method_config={})
        (run_dir / "predictions.txt").write_text("\n".join(hypotheses) + "\n")
        evaluation = json.loads((run_dir / "eval.json").read_text())
        (run_dir / "eval.json").write_text(json.dumps({**evaluation,
                                                       "predictions_path": str(run_dir / "predictions.txt")}))
        dirs.append(run_dir)
    db_path = tmp_path / "results.duckdb"
    aggregate(dirs, db_path)
    load_study_tasks(db_path, "s", {"en-de": {"kind": "translation", "target_lang": "de"}})
    assert paired_significance(db_path, "s", {"en-de": test_set}) == 4  # 2 runs x (bleu, chrf)
    assert paired_significance(db_path, "s", {"en-de": test_set}) == 4  # replaced, not appended
    assert tested == [["s/en-de/full/none/seed0", "s/en-de/bad/none/seed0", "s/en-de/twin/none/seed0"]]  # kept
    got = query(db_path, "SELECT * FROM mt_significance WHERE metric = 'chrf'").set_index("run_id")
    assert len(got) == 2 and set(got.baseline_run_id) == {"s/en-de/full/none/seed0"}
    bad, twin = got.loc["s/en-de/bad/none/seed0"], got.loc["s/en-de/twin/none/seed0"]
    assert bad.score == pytest.approx(CHRF().corpus_score(systems["bad"], [references]).score)
    assert bad.baseline_score == pytest.approx(100.0) and bad.p_value < 0.05
    assert 95 < twin.score < 100 and twin.p_value > 0.05  # (identical systems get p = 1/1001 from sacrebleu)
    summary = query(db_path, "SELECT * FROM significance WHERE metric = 'chrf' ORDER BY method")
    assert list(summary.method) == ["bad", "twin"] and list(summary.n_significant_05) == [1, 0]
    (tmp_path / "s/runs/en-de/twin/none/seed0/predictions.txt").write_text("\n".join(systems["bad"]) + "\n")
    assert paired_significance(db_path, "s", {"en-de": test_set}) == 4
    assert tested[-1] == ["s/en-de/full/none/seed0", "s/en-de/twin/none/seed0"]  # only the changed run
    got = query(db_path, "SELECT * FROM mt_significance WHERE metric = 'chrf'").set_index("run_id")
    assert got.score["s/en-de/twin/none/seed0"] == pytest.approx(bad.score)


def test_forgetting_view_flags_cka_that_is_not_comparable_and_partial_evaluations_load(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, "s", "en-de", m, "0.01", 0, family=m, method_config={}) for m in ("lora", "prefix")]
    note = "prefix tuning moves the input's positions by 4"
    prefix_eval = dirs[1] / "eval.json"
    record = json.loads(prefix_eval.read_text())
    for m in record["metrics"]:
        if m["metric"] == "cka":
            m.update(comparable=False, note=note)
    record.update(status="partial", error="retained_quality: FileNotFoundError: gone",
                  failed_steps={"retained_quality": "FileNotFoundError: gone"})
    prefix_eval.write_text(json.dumps(record))
    aggregate(dirs, tmp_path / "results.duckdb")
    cka = {d.parts[-3]: [m["value"] for m in json.loads((d / "eval.json").read_text())["metrics"]
                         if m["metric"] == "cka"] for d in dirs}
    got = query(tmp_path / "results.duckdb", "SELECT * FROM forgetting ORDER BY method").set_index("method")
    assert got.loc["lora", "comparable"] and pd.isna(got.loc["lora", "note"])
    assert not got.loc["prefix", "comparable"] and got.loc["prefix", "note"] == note
    for method, values in cka.items():
        assert got.loc[method, "cka_mean"] == pytest.approx(sum(values) / len(values))
        assert got.loc[method, "cka_min"] == pytest.approx(min(values))
    means = query(tmp_path / "results.duckdb", "SELECT method, value FROM run_metrics WHERE metric = 'cka_mean'")
    assert list(means.method) == ["lora"]
    runs = query(tmp_path / "results.duckdb", "SELECT method, eval_status, eval_error FROM runs ORDER BY method")
    assert list(runs.eval_status) == ["ok", "partial"] and runs.eval_error[1].startswith("retained_quality")
    chrf = query(tmp_path / "results.duckdb", "SELECT method FROM run_metrics WHERE metric = 'chrf' ORDER BY 1")
    assert list(chrf.method) == ["lora", "prefix"]  # a partial evaluation's scores still count
