"""Per-study tables that aggregate writes beside the run records: the study's tasks as configured
(study_tasks) and paired bootstrap tests of its translation runs against full fine-tuning (mt_significance).

Both replace the study's rows in one atomic update, like aggregate, so re-running never duplicates them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd
from sacrebleu.metrics import CHRF
from sacrebleu.significance import PairedTest

from ..scoring import bleu_metric
from .store import connect_readonly, replace_study_rows

log = logging.getLogger(__name__)
BOOTSTRAP_RESAMPLES = 1000


def load_study_tasks(db_path: Path | str, study: str, tasks: dict[str, dict]) -> int:
    """Replace the study's rows of study_tasks with its config's tasks (name -> task entry)."""
    rows = [{"study": study, "task": name, "kind": task.get("kind"), "source_lang": task.get("source_lang"),
             "target_lang": task.get("target_lang"), "language": task.get("language"),
             "distance": None if task.get("distance") is None else str(task["distance"])}
            for name, task in tasks.items()]
    return replace_study_rows(db_path, "study_tasks", study, pd.DataFrame(rows))


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").removesuffix("\n").split("\n")


def _sha256(*paths: Path) -> str:
    digest = hashlib.sha256(str(BOOTSTRAP_RESAMPLES).encode())
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def paired_significance(db_path: Path | str, study: str, test_sets: dict[str, Path]) -> int:
    """Test every ok translation run of `study` against the `full` run of the same task and seed with
    sacrebleu's paired bootstrap (BLEU and chrF), and replace the study's rows of mt_significance.

    test_sets: task name (without a ~variant suffix) -> the prepared test.jsonl the runs were scored on.
    A task and seed without an evaluated full run has no baseline and is skipped. A comparison whose inputs
    (both hypothesis files and the references) are unchanged since the last call keeps its rows: a test
    costs about a second per system on 2,000 sentences, and aggregation reruns whenever any run changes.
    """
    con = connect_readonly(db_path)
    try:
        runs = con.execute(
            "SELECT run_id, task, seed, method, eval_info->>'predictions_path' AS predictions, "
            "(SELECT any_value(target_lang) FROM study_tasks t WHERE t.study = r.study "
            " AND t.task = split_part(r.task, '~', 1)) AS target_lang "
            "FROM runs r WHERE study = ? AND task_kind = 'translation' AND status = 'ok' "
            # partial: a forgetting step failed after the hypotheses were written and scored
            "AND eval_status IN ('ok', 'partial') "
            "ORDER BY run_id", [study]).df()
        previous = con.execute("SELECT * FROM mt_significance WHERE study = ?", [study]).df()
    finally:
        con.close()
    kept = {key: group for key, group in previous.groupby(["run_id", "inputs_sha256"])}
    rows: list[dict] = []
    for (task, _seed), group in runs.groupby(["task", "seed"]):
        baseline = group[group.method == "full"].head(1)
        test_set = test_sets.get(task.split("~", 1)[0])
        if baseline.empty or test_set is None or not Path(test_set).is_file():
            continue
        references = [json.loads(line)["tgt"] for line in _lines(Path(test_set))]
        base_file = Path(baseline.predictions.iloc[0] or "")
        base_hypotheses = _lines(base_file) if base_file.is_file() else []
        if len(base_hypotheses) != len(references):
            log.warning("%s: no hypotheses aligned with %s, its task and seed are not tested",
                        baseline.run_id.iloc[0], test_set)
            continue
        systems = [(baseline.run_id.iloc[0], base_hypotheses)]
        hashes = {}
        for run in group[group.method != "full"].itertuples():
            run_file = Path(run.predictions or "")
            hypotheses = _lines(run_file) if run_file.is_file() else []
            if len(hypotheses) != len(references):
                # a hypothesis with a newline in it would misalign every pair after it
                log.warning("%s: no hypotheses aligned with %s, not tested", run.run_id, test_set)
                continue
            hashes[run.run_id] = _sha256(run_file, base_file, Path(test_set))
            if (run.run_id, hashes[run.run_id]) in kept:
                rows += kept[run.run_id, hashes[run.run_id]].to_dict("records")
            else:
                systems.append((run.run_id, hypotheses))
        if len(systems) < 2:
            continue
        # the BLEU tokenizer evaluation scored with (ja-mecab, ko-mecab, zh, else 13a), so p-values test that score
        metrics = {"bleu": bleu_metric(group.target_lang.iloc[0] or ""), "chrf": CHRF()}
        signatures, scores = PairedTest(systems, metrics, references=[references], test_type="bs",
                                        n_samples=BOOTSTRAP_RESAMPLES)()
        for name, column in zip(metrics, [k for k in scores if k != "System"], strict=True):
            base_score = scores[column][0].score
            for run_id, result in zip(scores["System"][1:], scores[column][1:], strict=True):
                rows.append({"study": study, "run_id": run_id, "baseline_run_id": systems[0][0], "metric": name,
                             "score": result.score, "baseline_score": base_score, "bootstrap_mean": result.mean,
                             "ci95": result.ci, "p_value": result.p_value, "n_examples": len(references),
                             "signature": str(signatures[column]), "inputs_sha256": hashes[run_id]})
    return replace_study_rows(db_path, "mt_significance", study, pd.DataFrame(rows))
