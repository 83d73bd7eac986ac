"""`peftlab mlflow`: the database's runs in a real MLflow tracking store (SQLite), read back with MLflow's own
client and compared with the database; exporting again changes nothing; a re-evaluated run replaces its MLflow
run instead of adding one."""

import json
import sys
from pathlib import Path

import duckdb
import pytest

mlflow = pytest.importorskip("mlflow")  # an optional extra (peftlab[mlflow]); requirements-dev.txt installs it

from mlflow.entities import ViewType  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from peftlab.cli import main  # noqa: E402
from peftlab.results import aggregate  # noqa: E402
from peftlab.results.mlflow_export import RUN_TAG, export_to_mlflow  # noqa: E402
from peftlab.results.synthetic import write_synthetic_grid  # noqa: E402

FAILED = "demo/en-de/lora/0.1/seed1"


def _runs(client: MlflowClient, view: int = ViewType.ACTIVE_ONLY) -> dict[str, list]:
    experiment = client.get_experiment_by_name("demo")
    found: dict[str, list] = {}
    for run in client.search_runs([experiment.experiment_id], run_view_type=view, max_results=1000):
        found.setdefault(run.data.tags[RUN_TAG], []).append(run)
    return found


def test_export_matches_the_database_and_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, db = tmp_path / "results", tmp_path / "results.duckdb"
    dirs = write_synthetic_grid(results, study="demo", tasks=["en-de"], methods=["full", "lora"],
                                budgets=["0.01", "0.1"], seeds=[0, 1], failed=[FAILED])
    aggregate(dirs, db)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["mlflow", "--db", str(db), "--tracking-uri", uri]) == 0
    assert "6 created, 0 replaced, 0 unchanged" in capsys.readouterr().out
    client = MlflowClient(uri)
    runs = _runs(client)
    with duckdb.connect(str(db), read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
        assert sorted(runs) == ids and all(len(v) == 1 for v in runs.values())
        for run_id, (run,) in runs.items():
            mlflow_id = run.info.run_id
            curve = con.execute("SELECT step, train_loss, dev_loss FROM training_curves WHERE run_id = ? "
                                "ORDER BY step", [run_id]).fetchall()
            assert curve, run_id
            for column, name in ((1, "train_loss"), (2, "dev_loss")):
                history = sorted((m.step, m.value) for m in client.get_metric_history(mlflow_id, name))
                assert history == [(row[0], row[column]) for row in curve]
            method, budget, seed, status, fraction, config = con.execute(
                "SELECT method, budget, seed, status, realised_fraction, train_config FROM runs WHERE run_id = ?",
                [run_id]).fetchone()
            assert (run.data.params["method"], run.data.params["budget"], run.data.params["seed"]) == (
                method, budget, str(seed))
            assert run.data.params["train_config.lr"] == str(json.loads(config)["lr"])
            assert run.data.metrics["realised_fraction"] == pytest.approx(fraction)
            assert run.info.status == ("FAILED" if status == "failed" else "FINISHED")
            if status == "failed":
                assert run.data.tags["peftlab.error"].startswith("RuntimeError: CUDA out of memory")
                assert "test/bleu" not in run.data.metrics
                continue
            bleu = con.execute("SELECT value FROM evaluations WHERE run_id = ? AND metric = 'bleu' AND split = 'test'",
                               [run_id]).fetchone()[0]
            assert run.data.metrics["test/bleu"] == pytest.approx(bleu)
            # the deployed latency: for LoRA the merged row (synthetic: as fast as the base model)
            ratio = con.execute("SELECT ratio_to_base FROM benchmarks WHERE run_id = ? AND deployed AND task = "
                                "'generate' AND batch_size = 1", [run_id]).fetchone()[0]
            assert run.data.metrics["latency/generate_b1_len32/ratio_to_base"] == pytest.approx(ratio)
            if method == "lora":
                assert ratio == pytest.approx(1.0)
            assert not any(k.startswith("cka") or "/cka" in k for k in run.data.metrics)  # per-layer scores left out

    # again: nothing changes, not even the MLflow run ids
    assert export_to_mlflow(db, uri) == {"created": 0, "replaced": 0, "unchanged": 6}
    assert {k: [r.info.run_id for r in v] for k, v in _runs(client).items()} == {
        k: [r.info.run_id for r in v] for k, v in runs.items()}

    # one run re-evaluated, re-aggregated: its MLflow run is replaced (the old one deleted), the others stay
    changed = "demo/en-de/lora/0.01/seed0"
    eval_path = results / "demo/runs/en-de/lora/0.01/seed0/eval.json"
    record = json.loads(eval_path.read_text())
    record["metrics"][0]["value"] = 12.5
    eval_path.write_text(json.dumps(record))
    aggregate(dirs, db)
    assert export_to_mlflow(db, uri) == {"created": 0, "replaced": 1, "unchanged": 5}
    after = _runs(client)
    assert sorted(after) == sorted(runs) and all(len(v) == 1 for v in after.values())
    assert after[changed][0].data.metrics["test/bleu"] == 12.5
    assert len(_runs(client, ViewType.DELETED_ONLY)[changed]) == 1


def test_export_errors_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dirs = write_synthetic_grid(tmp_path / "results", study="demo", tasks=["en-de"], methods=["full"], budgets=[],
                                seeds=[0])
    aggregate(dirs, tmp_path / "results.duckdb")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["mlflow", "--db", str(tmp_path / "results.duckdb"), "--tracking-uri", uri, "--study", "other"]) == 1
    assert "no runs of study 'other'" in capsys.readouterr().err
    assert main(["mlflow", "--db", str(tmp_path / "absent.duckdb"), "--tracking-uri", uri]) == 1
    assert "no results database" in capsys.readouterr().err
    assert main(["mlflow", "--db", str(tmp_path / "results.duckdb")]) == 1
    assert "--tracking-uri" in capsys.readouterr().err


def test_without_mlflow_the_command_says_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = write_synthetic_grid(tmp_path / "results", study="demo", tasks=["en-de"], methods=["full"], budgets=[],
                                seeds=[0])
    aggregate(dirs, tmp_path / "results.duckdb")
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # as if mlflow were not installed
    assert main(["mlflow", "--db", str(tmp_path / "results.duckdb"), "--tracking-uri", "sqlite:///x.db"]) == 1
    assert "pip install 'peftlab[mlflow]'" in capsys.readouterr().err
    assert not Path("x.db").exists()
