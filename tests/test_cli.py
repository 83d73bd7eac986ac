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
