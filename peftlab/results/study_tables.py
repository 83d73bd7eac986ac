"""Per-study tables that aggregate writes beside the run records: the study's tasks as configured
(study_tasks) and paired bootstrap tests of its translation runs against full fine-tuning (mt_significance).

Both replace the study's rows in one atomic update, like aggregate, so re-running never duplicates them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest

from .schema import STUDY_TABLES
from .store import connect_readonly, updating

log = logging.getLogger(__name__)
BOOTSTRAP_RESAMPLES = 1000


def _replace_study_rows(db_path: Path | str, table: str, study: str, frame: pd.DataFrame) -> int:
    columns = [c for c, _, _ in STUDY_TABLES[table][1]]
    frame = frame.reindex(columns=columns)
    with updating(db_path) as con:
        con.execute(f"DELETE FROM {table} WHERE study = ?", [study])
        if len(frame):
            con.register("_rows", frame)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
            con.unregister("_rows")
    return len(frame)


def load_study_tasks(db_path: Path | str, study: str, tasks: dict[str, dict]) -> int:
    """Replace the study's rows of study_tasks with its config's tasks (name -> task entry)."""
    rows = [{"study": study, "task": name, "kind": task.get("kind"), "source_lang": task.get("source_lang"),
             "target_lang": task.get("target_lang"), "language": task.get("language"),
             "distance": None if task.get("distance") is None else str(task["distance"])}
            for name, task in tasks.items()]
    return _replace_study_rows(db_path, "study_tasks", study, pd.DataFrame(rows))


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").removesuffix("\n").split("\n")


def paired_significance(db_path: Path | str, study: str, test_sets: dict[str, Path]) -> int:
    """Test every ok translation run of `study` against the `full` run of the same task and seed with
    sacrebleu's paired bootstrap (BLEU and chrF), and replace the study's rows of mt_significance.

    test_sets: task name (without a ~variant suffix) -> the prepared test.jsonl the runs were scored on.
    A task and seed without an evaluated full run has no baseline and is skipped.
    """
    con = connect_readonly(db_path)
    try:
        runs = con.execute(
            "SELECT run_id, task, seed, method, eval_info->>'predictions_path' AS predictions, "
            "(SELECT any_value(target_lang) FROM study_tasks t WHERE t.study = r.study "
            " AND t.task = split_part(r.task, '~', 1)) AS target_lang "
            "FROM runs r WHERE study = ? AND task_kind = 'translation' AND status = 'ok' AND eval_status = 'ok' "
            "ORDER BY run_id", [study]).df()
    finally:
        con.close()
    rows = []
    for (task, _seed), group in runs.groupby(["task", "seed"]):
        baseline = group[group.method == "full"]
        others = group[group.method != "full"]
        test_set = test_sets.get(task.split("~", 1)[0])
        if baseline.empty or others.empty or test_set is None:
            continue
        references = [json.loads(line)["tgt"] for line in _lines(Path(test_set))]
        systems = []
        for run in pd.concat([baseline.head(1), others]).itertuples():
            hypotheses = _lines(Path(run.predictions)) if run.predictions else []
            if len(hypotheses) != len(references):  # a hypothesis with a newline would misalign every pair
                log.warning("%s: %d hypotheses for %d references, not tested", run.run_id, len(hypotheses),
                            len(references))
                continue
            systems.append((run.run_id, hypotheses))
        if len(systems) < 2 or systems[0][0] != baseline.run_id.iloc[0]:
            continue
        target_lang = group.target_lang.iloc[0] or ""
        metrics = {"bleu": BLEU(trg_lang=target_lang), "chrf": CHRF()}
        signatures, scores = PairedTest(systems, metrics, references=[references], test_type="bs",
                                        n_samples=BOOTSTRAP_RESAMPLES)()
        for name, column in zip(metrics, [k for k in scores if k != "System"], strict=True):
            base_score = scores[column][0].score
            for run_id, result in zip(scores["System"][1:], scores[column][1:], strict=True):
                rows.append({"study": study, "run_id": run_id, "baseline_run_id": systems[0][0], "metric": name,
                             "score": result.score, "baseline_score": base_score, "bootstrap_mean": result.mean,
                             "ci95": result.ci, "p_value": result.p_value, "n_examples": len(references),
                             "signature": str(signatures[column])})
    return _replace_study_rows(db_path, "mt_significance", study, pd.DataFrame(rows))
