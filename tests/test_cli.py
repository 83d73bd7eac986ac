"""`peftlab` CLI: read-only queries in three formats, Markdown tables, plots."""

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest

from peftlab.cli import main
from peftlab.results import aggregate
from peftlab.results.synthetic import write_synthetic_grid


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    dirs = write_synthetic_grid(root, study="demo", tasks=["en-de"], methods=["full", "lora", "adapter"],
                                budgets=["0.01", "0.1"], seeds=[0, 1], failed=["demo/en-de/lora/0.1/seed1"])
    aggregate(dirs, root / "results.duckdb")
    return root / "results.duckdb"


SQL = "SELECT method, budget, n_seeds, chrf FROM method_comparison ORDER BY method, budget"


def test_query_formats(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--db", str(db), SQL, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["method"], r["budget"], r["n_seeds"]) for r in rows] == [
        ("adapter", "0.01", "2"), ("adapter", "0.1", "2"), ("full", "none", "2"), ("lora", "0.01", "2"),
        ("lora", "0.1", "1")]
    assert main(["query", "--db", str(db), SQL, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[2]["method"] == "full" and isinstance(records[2]["chrf"], float)
    assert main(["query", "--db", str(db), "SELECT versions FROM runs LIMIT 1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["versions"]["peftlab"] == "0.1.0"  # JSON nests
    assert main(["query", "--db", str(db), SQL]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("|")[1].strip() == "method" and len(lines) == 2 + 5


def test_query_is_read_only(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for sql in ("DELETE FROM runs", "CREATE TABLE x (a INT)", "DROP VIEW method_comparison"):
        assert main(["query", "--db", str(db), sql]) == 1
        assert "read-only" in capsys.readouterr().err
    assert main(["query", "--db", str(db), "SELECT count(*) AS n FROM runs", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["n", "10"]


def test_query_reaches_no_other_file_nor_setting(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No statement of a query can write a file, open another database, read the file system, load an
    extension or unlock the configuration; SELECTs over the views still work."""
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).execute("CREATE TABLE t AS SELECT 1 AS a").close()
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n42\n")
    before = db.read_bytes()
    refused = {
        f"COPY (SELECT 1) TO '{db}'": "file system operations are disabled",
        f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'": "file system operations are disabled",
        f"ATTACH '{other}' AS o (READ_WRITE)": "file system operations are disabled",
        f"SELECT * FROM read_csv('{secret}')": "file system operations are disabled",
        "SELECT * FROM read_csv('/etc/passwd')": "file system operations are disabled",
        f"EXPORT DATABASE '{tmp_path / 'export'}'": "file system operations are disabled",
        "INSTALL httpfs": "file system operations are disabled",
        "LOAD httpfs": "Loading external extensions is disabled",  # json is built in: a no-op
        "SET enable_external_access = true": "the configuration has been locked",
        "SET lock_configuration = false": "the configuration has been locked",
        "RESET enable_external_access": "the configuration has been locked",
    }
    for sql, message in refused.items():
        assert main(["query", "--db", str(db), sql]) == 1, sql
        assert message in capsys.readouterr().err, sql
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.duckdb", "secret.csv"]
    assert duckdb.connect(str(other), read_only=True).execute("SELECT a FROM t").fetchall() == [(1,)]
    for view in ("method_comparison", "run_summary", "pareto", "run_metrics"):
        assert main(["query", "--db", str(db), f"SELECT count(*) AS n FROM {view}", "--format", "csv"]) == 0
        assert int(capsys.readouterr().out.split()[1]) > 0, view


def test_missing_db_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["query", "SELECT 1"], ["tables"], ["plots", "--out", str(tmp_path / "p")]):
        assert main([*argv, "--db", str(tmp_path / "nope.duckdb")]) == 1
        assert "no results database at" in capsys.readouterr().err
    assert not (tmp_path / "nope.duckdb").exists()


def test_tables(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tables", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "## method_comparison" in out and "## seed_spread" in out and "| lora " in out
    assert main(["tables", "--db", str(db), "--view", "pareto"]) == 0
    assert capsys.readouterr().out.startswith("## pareto\n\n| study")
    assert main(["tables", "--db", str(db), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "method_comparison.md").read_text().splitlines()
    assert md[0] == "## method_comparison" and md[2].startswith("| study") and len(md) == 2 + 2 + 5


def test_plots(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plots", "--db", str(db), "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["pareto_demo_en-de.png", "pareto_demo_en-de.svg",
                     "quality_vs_budget_demo_en-de.png", "quality_vs_budget_demo_en-de.svg"]
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "writing" in capsys.readouterr().err  # progress


def test_version_and_a_closed_pipe(db: Path) -> None:
    import subprocess
    import sys

    import peftlab

    cli = [sys.executable, "-m", "peftlab.cli"]
    version = subprocess.run([*cli, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"peftlab {peftlab.__version__}"
    # `peftlab tables | head -1`: the reader leaves after one line; no BrokenPipeError traceback
    piped = subprocess.run(f"{' '.join(cli)} tables --db {db} | head -1", shell=True, capture_output=True, text=True)
    assert piped.stdout == "## method_comparison\n" and piped.stderr == ""


def test_tables_split_mt_and_nlu_and_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = write_synthetic_grid(tmp_path, study="mix", tasks=["en-de", "sst2"], methods=["full", "lora"],
                                budgets=["0.01"], seeds=[0])
    dirs += write_synthetic_grid(tmp_path, study="other", tasks=["en-de"], methods=["full"], budgets=[], seeds=[0])
    aggregate(dirs, tmp_path / "r.duckdb")
    assert main(["tables", "--db", str(tmp_path / "r.duckdb"), "--view", "method_comparison",
                 "--view", "training_cost"]) == 0
    blocks = {b.split("\n")[0]: b.split("\n")[2:] for b in capsys.readouterr().out.split("\n\n## ")}
    assert list(blocks) == ["## method_comparison_mt", "method_comparison_nlu", "training_cost_mt",
                            "training_cost_nlu"]
    mt_head = [c.strip() for c in blocks["## method_comparison_mt"][0].strip("|").split("|")]
    nlu_head = [c.strip() for c in blocks["method_comparison_nlu"][0].strip("|").split("|")]
    cost_head = [c.strip() for c in blocks["training_cost_mt"][0].strip("|").split("|")]
    assert mt_head[:5] == nlu_head[:5] == cost_head[:5] == ["study", "task", "method", "budget", "budget_target"]
    assert {"bleu", "chrf", "ter"} <= set(mt_head) and not {"accuracy", "macro_f1"} & set(mt_head)
    assert {"accuracy", "macro_f1"} <= set(nlu_head) and not {"bleu", "chrf", "ter"} & set(nlu_head)
    assert len(blocks["## method_comparison_mt"]) == 2 + 3 + 2  # full x 2 studies, lora 0.01; the note
    # one seed each, none failed: given once below the table, not as columns
    assert blocks["## method_comparison_mt"][-1].startswith("In every row: n_seeds 1, n_failed 0")
    assert not {"n_seeds", "n_failed"} & set(mt_head)
    assert main(["tables", "--db", str(tmp_path / "r.duckdb"), "--view", "method_comparison",
                 "--study", "mix", "--task", "en-de"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "## method_comparison, study mix, task en-de"  # one kind left: no split
    assert lines[2].startswith("| method | budget | budget_target |") and len(lines) == 2 + 2 + 2 + 2


def _study_config(tmp_path: Path) -> Path:
    """config/test.yaml narrowed to a grid the synthetic records can fill: en-de x (full, lora) x 2 budgets
    x 2 seeds = 6 runs, written where the workflow's working directory would have it."""
    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "test.yaml").read_text())
    config["study"] = "demo"
    config["grid"] = {"tasks": ["en-de"], "methods": ["full", "lora"], "budgets": [0.01, 0.1], "seeds": [0, 1]}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_status_and_aggregating_what_has_finished(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, schema = _study_config(tmp_path), Path(__file__).parents[1] / "config" / "schema.yaml"
    results = tmp_path / "results"
    write_synthetic_grid(results, study="demo", tasks=["en-de"], methods=["full", "lora"], budgets=["0.01"],
                         seeds=[0, 1], failed=["demo/en-de/lora/0.01/seed1"])
    (results / "demo/runs/en-de/full/none/seed1/bench.json").unlink()  # still benchmarking
    argv = ["status", str(config), "--schema", str(schema), "--root", str(tmp_path)]
    db = tmp_path / "partial.duckdb"
    assert main([*argv, "--aggregate", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    states = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.splitlines()[2:8]}
    assert states == {"demo/en-de/full/none/seed0": "finished", "demo/en-de/full/none/seed1": "pending",
                      "demo/en-de/lora/0.01/seed0": "finished", "demo/en-de/lora/0.01/seed1": "failed",
                      "demo/en-de/lora/0.1/seed0": "pending", "demo/en-de/lora/0.1/seed1": "pending"}
    assert "study demo: 6 runs: 2 finished, 1 failed, 3 pending" in out and "no bench.json" in out
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, count(*) FROM runs GROUP BY ALL ORDER BY ALL").fetchall() == [
            ("failed", 1), ("missing", 2), ("ok", 3)]
    assert main([*argv, "--only", "failed"]) == 0
    assert capsys.readouterr().out.count("demo/en-de/") == 1

    # the rest finishes; the workflow's full aggregation replaces the rows: the same database as if the
    # partial load had never happened
    dirs = write_synthetic_grid(results, study="demo", tasks=["en-de"], methods=["full", "lora"],
                                budgets=["0.01", "0.1"], seeds=[0, 1], failed=["demo/en-de/lora/0.01/seed1"])
    dirs = [tmp_path / Path(d).relative_to(tmp_path) for d in dirs]
    aggregate(dirs, db, study="demo")
    aggregate(dirs, tmp_path / "fresh.duckdb", study="demo")
    query = "SELECT * EXCLUDE (loaded_at) FROM runs ORDER BY run_id"
    with duckdb.connect(str(db), read_only=True) as a, duckdb.connect(str(tmp_path / "fresh.duckdb"),
                                                                      read_only=True) as b:
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
        for view in ("method_comparison", "seed_spread"):
            assert a.execute(f"SELECT * FROM {view}").fetchall() == b.execute(f"SELECT * FROM {view}").fetchall()
        assert a.execute("SELECT count(*) FROM evaluations").fetchone() == b.execute(
            "SELECT count(*) FROM evaluations").fetchone()


def test_status_names_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _study_config(tmp_path)
    config.write_text(config.read_text().replace("seeds:", "sedes:"))
    assert main(["status", str(config), "--schema", str(Path(__file__).parents[1] / "config" / "schema.yaml")]) == 1
    err = capsys.readouterr().err
    assert "peftlab status: error:" in err and "grid" in err and "sedes" in err
