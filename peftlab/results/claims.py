"""A paper's headline figures beside what a study measured: expectations files -> paper_claims -> reproduction.

Each study config `config/studies/<study>.yaml` may have `config/studies/<study>.expected.yaml` beside it:

    study: houlsby2019-glue
    paper: Houlsby et al. 2019, Parameter-Efficient Transfer Learning for NLP (ICML)
    claims:
      - id: adapters-near-full
        claim: Adapters come within 0.4 points of full fine-tuning on GLUE.
        source: Abstract; Table 1
        metric: accuracy                  # a run_metrics.metric; leave out when the study cannot measure it
        scale: 100                        # accuracy is stored as a fraction; the paper reports points
        runs: {method: "houlsby~*", pick: best_dev}
        baseline: {method: "full~*", pick: best_dev}   # no task: paired with the runs task by task
        statistic: difference             # value | difference | ratio (default: difference with a baseline)
        expected: -0.4
        tolerance: 1.0                    # agrees when measured is in [expected - tolerance, expected + tolerance]
        # or instead: min: / max: (one or both) for a directional claim ("adapters are slower": min: 1.0)

A selection (`runs`, `baseline`) names `task`, `method` and `budget` as glob patterns (`*`, `?`, `[...]`) or
lists of them, matched against the run path's names (method entries and their study-axis variants such as
`houlsby~lr0.0003`, tasks such as `sst2~n1000`, budgets as in the path, e.g. 0.01 or none), and a `pick`:
mean (every matching configuration), best_dev (per task the configuration with the lowest dev loss, as a
paper that selects hyperparameters on dev does) or spread (per task the standard deviation across the
matching configurations, e.g. over learning rates). `subset` selects a zero-shot language or a retained
pretraining pair instead of the headline test set; `detector` the OOD detector of ood_* metrics.

load_expectations(db, study, path) replaces the study's rows of paper_claims; the `reproduction` view (see
schema.py) computes the measured figure and the verdict whenever it is read, so new runs count at once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .schema import STUDY_TABLES

CLAIM_KEYS = {"id", "claim", "source", "note", "metric", "scale", "subset", "detector", "statistic", "runs",
              "baseline", "expected", "tolerance", "min", "max"}
SELECTION_KEYS = {"task", "method", "budget", "pick"}
PICKS = ("mean", "best_dev", "spread")
STATISTICS = ("value", "difference", "ratio")
FILE_KEYS = {"study", "paper", "url", "claims"}


class ExpectationsError(ValueError):
    """An expectations file that cannot be compared with a study."""


def glob_regex(patterns: str | int | float | list | None, default: str = "*") -> str:
    """Glob pattern(s) -> one regular expression for DuckDB's regexp_full_match (RE2 syntax)."""
    if patterns is None:
        patterns = [default]
    if not isinstance(patterns, list):
        patterns = [patterns]
    if not patterns:
        raise ExpectationsError("an empty list of patterns matches nothing")
    alternatives = []
    for pattern in patterns:
        pattern = f"{pattern:g}" if isinstance(pattern, float) else str(pattern)  # budgets as in run paths
        out, i = [], 0
        while i < len(pattern):
            ch = pattern[i]
            if ch == "*":
                out.append(".*")
            elif ch == "?":
                out.append(".")
            elif ch == "[" and "]" in pattern[i + 2:]:  # a character class, [!...] negated as in fnmatch
                end = pattern.index("]", i + 2)
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
            else:
                out.append(re.escape(ch))
            i += 1
        alternatives.append("".join(out))
    return alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"


def _describe(selection: dict) -> str:
    def text(value: Any, default: str) -> str:
        if value is None:
            return default
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    parts = [text(selection.get("method"), "*")]
    if selection.get("budget") is not None:
        parts.append(f"@{text(selection['budget'], '*')}")
    if selection.get("task") is not None:
        parts.append(f" on {text(selection['task'], '*')}")
    pick = selection.get("pick", "mean")
    return "".join(parts) + ("" if pick == "mean" else f" ({pick})")


def _selection(claim_id: str, side: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ExpectationsError(f"claim {claim_id!r}: {side} must be a mapping of {sorted(SELECTION_KEYS)}")
    unknown = set(value) - SELECTION_KEYS
    if unknown:
        raise ExpectationsError(f"claim {claim_id!r}: unknown keys {sorted(unknown)} in {side}; "
                                f"known: {sorted(SELECTION_KEYS)}")
    if value.get("pick", "mean") not in PICKS:
        raise ExpectationsError(f"claim {claim_id!r}: {side}.pick must be one of {PICKS}, got {value['pick']!r}")
    return value


def _number(claim_id: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpectationsError(f"claim {claim_id!r}: {key} must be a number, got {value!r}")
    return float(value)


def read_expectations(path: Path | str, study: str | None = None) -> pd.DataFrame:
    """Parse and check an expectations file; one row per claim in paper_claims' columns.

    `study`, when given, must match the file's own `study:` (a file copied beside the wrong config
    would otherwise attach one paper's figures to another study).
    """
    path = Path(path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict) or set(doc) - FILE_KEYS:
        raise ExpectationsError(f"{path}: top-level keys must be among {sorted(FILE_KEYS)}")
    file_study = doc.get("study")
    if not file_study or (study is not None and file_study != study):
        raise ExpectationsError(f"{path}: study {file_study!r} does not match the study {study!r}")
    claims = doc.get("claims")
    if not isinstance(claims, list) or not claims:
        raise ExpectationsError(f"{path}: `claims` must be a non-empty list")
    paper = str(doc.get("paper") or "") + (f" <{doc['url']}>" if doc.get("url") else "")
    rows, seen = [], set()
    loaded_at = datetime.now(UTC).replace(tzinfo=None)
    for position, claim in enumerate(claims):
        if not isinstance(claim, dict) or not claim.get("id") or not claim.get("claim"):
            raise ExpectationsError(f"{path}: claim #{position + 1} needs at least `id` and `claim`")
        cid = str(claim["id"])
        unknown = set(claim) - CLAIM_KEYS
        if unknown:
            raise ExpectationsError(f"{path}: claim {cid!r} has unknown keys {sorted(unknown)}; known: "
                                    f"{sorted(CLAIM_KEYS)}")
        if cid in seen:
            raise ExpectationsError(f"{path}: claim id {cid!r} is used twice")
        seen.add(cid)
        runs = _selection(cid, "runs", claim.get("runs"))
        baseline = _selection(cid, "baseline", claim.get("baseline"))
        statistic = claim.get("statistic") or ("difference" if baseline else "value")
        if statistic not in STATISTICS:
            raise ExpectationsError(f"claim {cid!r}: statistic must be one of {STATISTICS}, got {statistic!r}")
        if (statistic == "value") == bool(baseline):
            raise ExpectationsError(f"claim {cid!r}: a {statistic} " +
                                    ("takes no baseline" if baseline else "needs a baseline"))
        expected = _number(cid, "expected", claim.get("expected"))
        tolerance = _number(cid, "tolerance", claim.get("tolerance"))
        low, high = _number(cid, "min", claim.get("min")), _number(cid, "max", claim.get("max"))
        if expected is not None:
            if tolerance is None or tolerance < 0 or low is not None or high is not None:
                raise ExpectationsError(f"claim {cid!r}: `expected` needs a non-negative `tolerance` (and no "
                                        "min/max); a directional claim gives min and/or max instead")
            low, high = expected - tolerance, expected + tolerance
        elif tolerance is not None:
            raise ExpectationsError(f"claim {cid!r}: `tolerance` without `expected`")
        if low is not None and high is not None and low > high:
            raise ExpectationsError(f"claim {cid!r}: min {low} is above max {high}")
        scale = _number(cid, "scale", claim.get("scale"))
        subset = claim.get("subset")
        metric = claim.get("metric")
        comparison = _describe(runs) + (f" vs {_describe(baseline)}" if baseline else "")
        rows.append({
            "study": file_study, "claim_id": cid, "position": position, "claim": str(claim["claim"]).strip(),
            "paper": paper or None, "source": claim.get("source"),
            "note": str(claim["note"]).strip() if claim.get("note") else None,
            "metric": metric, "scale": 1.0 if scale is None else scale,
            "subset": None if subset is None else ",".join(map(str, subset if isinstance(subset, list) else [subset])),
            "subset_re": None if subset is None else glob_regex(subset),
            "detector": claim.get("detector"), "statistic": statistic,
            "comparison": comparison if metric else None,
            "runs_task_re": glob_regex(runs.get("task")), "runs_method_re": glob_regex(runs.get("method")),
            "runs_budget_re": glob_regex(runs.get("budget")), "runs_pick": runs.get("pick", "mean"),
            "baseline_task_re": None if baseline.get("task") is None else glob_regex(baseline["task"]),
            "baseline_method_re": glob_regex(baseline.get("method")) if baseline else None,
            "baseline_budget_re": glob_regex(baseline.get("budget")) if baseline else None,
            "baseline_pick": baseline.get("pick", "mean") if baseline else None,
            "expected": expected, "tolerance": tolerance, "low": low, "high": high,
            "expectations_file": str(path), "loaded_at": loaded_at,
        })
    columns = [c for c, _, _ in STUDY_TABLES["paper_claims"][1]]
    return pd.DataFrame.from_records(rows, columns=columns)


def load_expectations(db_path: Path | str, study: str, path: Path | str | None) -> int:
    """Replace the study's rows of paper_claims in results.duckdb with the claims of `path` (none: the study
    has no expectations file, or no longer has one); returns how many. Atomic like aggregate (copy, one
    transaction, rename), so readers never see a partial update."""
    from .store import replace_study_rows

    frame = pd.DataFrame() if path is None else read_expectations(path, study)
    return replace_study_rows(db_path, "paper_claims", study, frame)
