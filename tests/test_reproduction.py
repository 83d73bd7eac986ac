"""paper_claims and the reproduction view: expectations files parsed and checked, measured figures computed
the way a reader would with pandas over the same run records, verdicts, reloads."""

import json
import math
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from peftlab.results import ExpectationsError, aggregate, connect_readonly, load_expectations, read_expectations
from peftlab.results.claims import glob_regex
from peftlab.results.synthetic import write_synthetic_grid

STUDY = "demo"
FAILED = "demo/en-fi/lora/0.1/seed1"
GRID = dict(study=STUDY, tasks=["en-de", "en-fi"], methods=["full", "lora", "adapter"], budgets=["0.01", "0.1"],
            seeds=[0, 1])


def runs_frame(dirs: list[Path]) -> pd.DataFrame:
    """One row per ok run: identity, chrF, dev score, batch-1 generate latency, mean CKA (pandas only)."""
    rows = []
    for d in dirs:
        tr = json.loads((d / "train.json").read_text())
        if tr["status"] != "ok":
            continue
        ev = json.loads((d / "eval.json").read_text())["metrics"]
        bench = json.loads((d / "bench.json").read_text())["measurements"]
        rows.append({k: tr[k] for k in ("task", "method", "budget", "seed")} | {
            "chrf": next(m["value"] for m in ev if m["metric"] == "chrf"),
            "cka_mean": sum(m["value"] for m in ev if m["metric"] == "cka") / 2,
            "dev": tr["train"]["best_dev_score"],
            "latency": next(m["latency_ms_median"] for m in bench
                            if m["task"] == "generate" and m["batch_size"] == 1 and m["deployed"])})
    return pd.DataFrame(rows)


def claims_file(tmp_path: Path, claims: list[dict], study: str = STUDY) -> Path:
    path = tmp_path / f"{study}.expected.yaml"
    path.write_text(yaml.safe_dump({"study": study, "paper": "A. Author 2024", "claims": claims}))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("results")
    dirs = write_synthetic_grid(root, failed=[FAILED], **GRID)
    aggregate(dirs, root / "results.duckdb")
    return root / "results.duckdb", runs_frame(dirs)


def reproduction(db: Path) -> pd.DataFrame:
    with connect_readonly(db) as con:
        return con.execute("SELECT * FROM reproduction").df().set_index("claim_id")


def config_means(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (task, method, budget): the metric and dev score averaged over seeds."""
    return df.groupby(["task", "method", "budget"])[[metric, "dev"]].mean().reset_index()


def test_measured_figures_match_pandas(study, tmp_path):
    db, df = study
    cfg = config_means(df, "chrf")
    lora = cfg[(cfg.method == "lora") & (cfg.budget == "0.1")].set_index("task")["chrf"]
    full = cfg[cfg.method == "full"].set_index("task")["chrf"]
    best_adapter = cfg[cfg.method == "adapter"].sort_values("dev").groupby("task").first()["chrf"]
    lat = df.groupby(["task", "method", "budget"])["latency"].mean()
    ratio = math.exp(sum(math.log(lat[(t, "adapter", "0.01")] / lat[(t, "full", "none")]) for t in full.index) / 2)
    spread = cfg[cfg.budget == "0.1"].groupby("task")["chrf"].std().mean()
    cka = df[(df.method == "lora")].groupby(["task", "budget"])["cka_mean"].mean().mean()
    claims = [
        {"id": "value", "claim": "LoRA at 10% reaches this chrF", "metric": "chrf",
         "runs": {"method": "lora", "budget": 0.1}, "expected": round(float(lora.mean()), 3), "tolerance": 0.01},
        {"id": "paired", "claim": "adapters (best on dev) vs full", "metric": "chrf",
         "runs": {"method": "adapter", "pick": "best_dev"}, "baseline": {"method": "full"}, "min": 100},
        {"id": "ratio", "claim": "adapters are slower", "metric": "latency_ms_b1",
         "runs": {"method": "adapter", "budget": "0.01"}, "baseline": {"method": "full"}, "statistic": "ratio",
         "min": 1.0},
        {"id": "spread", "claim": "spread across methods at 10%", "metric": "chrf",
         "runs": {"method": ["lora", "adapter"], "budget": "0.1", "pick": "spread"}},
        {"id": "unpaired", "claim": "LoRA on en-de vs full on en-fi", "metric": "chrf", "scale": 2,
         "runs": {"task": "en-de", "method": "lora", "budget": "0.1"},
         "baseline": {"task": "en-fi", "method": "full"}},
        {"id": "vs-full", "claim": "the same as a derived metric", "metric": "chrf_vs_full",
         "runs": {"method": "lora", "budget": "0.1"}},
        {"id": "cka", "claim": "representations stay close", "metric": "cka_mean", "runs": {"method": "lora"}},
    ]
    load_expectations(db, STUDY, claims_file(tmp_path, claims))
    got = reproduction(db)
    assert got.loc["value", "measured"] == pytest.approx(lora.mean())
    assert got.loc["value", "status"] == "agrees"
    assert got.loc["value", "n_tasks"] == 2 and got.loc["value", "n_runs"] == 3  # one lora@0.1 seed failed
    assert got.loc["paired", "measured"] == pytest.approx((best_adapter - full).mean())
    assert got.loc["paired", "status"] == "disagrees" and pd.isna(got.loc["paired", "gap"])  # no expected value
    assert got.loc["ratio", "measured"] == pytest.approx(ratio)
    assert got.loc["ratio", "status"] == ("agrees" if ratio >= 1 else "disagrees")
    assert got.loc["spread", "measured"] == pytest.approx(spread)
    assert got.loc["spread", "status"] == "no figure"
    assert got.loc["unpaired", "measured"] == pytest.approx(2 * (lora["en-de"] - full["en-fi"]))
    assert got.loc["unpaired", "n_baseline_runs"] == 2
    by_seed = df.set_index(["task", "method", "budget", "seed"])["chrf"]
    lora_runs = df[(df.method == "lora") & (df.budget == "0.1")]
    vs_full = [by_seed[(r.task, "lora", "0.1", r.seed)] - by_seed[(r.task, "full", "none", r.seed)]
               for r in lora_runs.itertuples()]  # paired by seed, then per task, then across tasks
    per_task = pd.Series(vs_full, index=lora_runs.task).groupby(level=0).mean()
    assert got.loc["vs-full", "measured"] == pytest.approx(per_task.mean())
    assert got.loc["cka", "measured"] == pytest.approx(cka)
    assert list(got.index) == [c["id"] for c in claims]  # in file order


def test_claims_without_runs_or_metric_say_so(study, tmp_path):
    db, _ = study
    load_expectations(db, STUDY, claims_file(tmp_path, [
        {"id": "absent", "claim": "prefix tuning", "metric": "chrf", "runs": {"method": "prefix"}, "max": 0},
        {"id": "elsewhere", "claim": "multi-task training", "note": "not in this grid"},
        {"id": "subset", "claim": "zero-shot", "metric": "chrf", "subset": "de", "runs": {"method": "full"},
         "max": 0}]))
    got = reproduction(db)
    assert got["status"].to_dict() == {"absent": "not measured", "elsewhere": "not measurable here",
                                       "subset": "not measured"}
    assert (got["n_runs"] == 0).all()


def test_reloading_replaces_the_studys_claims_only(study, tmp_path):
    db, _ = study
    claim = {"id": "a", "claim": "x", "metric": "chrf", "runs": {"method": "full"}, "min": 0}
    load_expectations(db, "other", claims_file(tmp_path, [claim], study="other"))
    load_expectations(db, STUDY, claims_file(tmp_path, [claim, {**claim, "id": "b"}]))
    assert load_expectations(db, STUDY, claims_file(tmp_path, [{**claim, "id": "c"}])) == 1
    with connect_readonly(db) as con:
        rows = con.execute("SELECT study, claim_id FROM paper_claims ORDER BY ALL").fetchall()
    assert rows == [("demo", "c"), ("other", "a")]
    aggregate([], db)  # re-aggregating keeps the claims
    with connect_readonly(db) as con:
        assert con.execute("SELECT count(*) FROM paper_claims").fetchone()[0] == 2


@pytest.mark.parametrize("claim, message", [
    ({"id": "a", "claim": "x", "metric": "chrf", "colour": 1}, "unknown keys"),
    ({"id": "a", "claim": "x", "metric": "chrf", "expected": 1}, "tolerance"),
    ({"id": "a", "claim": "x", "metric": "chrf", "min": 2, "max": 1}, "above max"),
    ({"id": "a", "claim": "x", "metric": "chrf", "runs": {"pick": "max"}}, "pick"),
    ({"id": "a", "claim": "x", "metric": "chrf", "statistic": "ratio"}, "needs a baseline"),
    ({"id": "a", "claim": "x", "metric": "chrf", "baseline": {"method": "full"}, "statistic": "value"},
     "takes no baseline"),
    ({"claim": "x"}, "needs at least"),
])
def test_bad_expectations_are_named(tmp_path, claim, message):
    with pytest.raises(ExpectationsError, match=message):
        read_expectations(claims_file(tmp_path, [claim]), STUDY)


def test_an_expectations_file_of_another_study_is_refused(tmp_path):
    path = claims_file(tmp_path, [{"id": "a", "claim": "x"}], study="houlsby2019-glue")
    with pytest.raises(ExpectationsError, match="does not match"):
        read_expectations(path, "ustun2022-mt")


def test_glob_patterns_match_run_names_in_duckdb():
    con = duckdb.connect()
    names = ["houlsby", "houlsby~lr0.0003", "full", "sst2~n1000", "en-de", "en-de.mt5-large", "0.1", "none"]
    cases = {"houlsby~*": ["houlsby~lr0.0003"], ("full", "houlsby"): ["houlsby", "full"],
             "*~n1000": ["sst2~n1000"], "en-??": ["en-de"], "*.mt5-*": ["en-de.mt5-large"], 0.1: ["0.1"],
             "[!e]*": ["houlsby", "houlsby~lr0.0003", "full", "sst2~n1000", "0.1", "none"]}
    for pattern, expected in cases.items():
        regex = glob_regex(list(pattern) if isinstance(pattern, tuple) else pattern)
        got = [n for n in names if con.execute("SELECT regexp_full_match(?, ?)", [n, regex]).fetchone()[0]]
        assert got == expected, pattern


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parent.parent.glob("config/studies/*.expected.yaml")),
                         ids=lambda p: p.name.removesuffix(".expected.yaml"))
def test_every_studys_expectations_load_before_any_run(tmp_path, path):
    """A study's figures load into a database without runs yet: every claim shows up, none measured."""
    study = path.name.removesuffix(".expected.yaml")
    db = tmp_path / "results.duckdb"
    n = load_expectations(db, study, path)
    got = reproduction(db)
    assert len(got) == n == len(yaml.safe_load(path.read_text())["claims"])
    assert set(got["status"]) <= {"not measured", "not measurable here"}
