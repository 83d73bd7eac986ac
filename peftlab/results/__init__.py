"""The results layer: per-run JSON records -> results/results.duckdb -> SQL, tables and plots.

`aggregate(run_dirs, db_path, study=...)` loads train.json / eval.json / bench.json of each run directory
(`results/<study>/runs/<task>/<method>/<budget>/seed<k>/`), replaces every row of those run_ids, and
deletes the study's rows of runs no longer in its grid (run_dirs is the whole grid).

Tables (every column carries a COMMENT; list them with
`SELECT table_name, column_name, data_type, comment FROM duckdb_columns()`):
- runs: one row per run: identity (study, task, method, budget, budget_target, seed), status/error
  (ok | failed | missing), realised parameters, training timings and memory, provenance (base model,
  data hash, code fingerprint, versions JSON, device), eval_status/bench_status.
- training_curves: run_id, step, train_loss, dev_loss, lr, elapsed_s.
- evaluations: long format, run_id, split, metric, value, signature, optional detector/layer/subset,
  n_examples; new metrics need no schema change.
- benchmarks: run_id, task (generate | forward), batch_size, seq_len, new_tokens, latency percentiles and
  CV, the base model's (timed beside it in one process), ratio_to_base with its percentiles and CV, merged /
  deployed (LoRA and IA3 are timed unmerged and merged; views use the deployed row), throughput, peak
  memory, warmup, repeats, device, threads.
Views (schema.VIEWS; adding one is one SQL string): run_summary, method_comparison,
quality_vs_budget, quality_by_distance, pareto, training_cost, sparse_vs_dense, coda_speedup,
significance, seed_spread, run_metrics (every measurement, long format) and reproduction (a paper's
claims beside what its study measured).

Per study: paper_claims, loaded by `load_expectations(db, study, "config/studies/<study>.expected.yaml")`
(the format is in claims.py); study_tasks (the config's tasks, e.g. their language-pair distance) and
mt_significance (sacrebleu paired bootstrap against full fine-tuning), written by study_tables.py.
"""

from .claims import ExpectationsError, load_expectations, read_expectations
from .report import format_table, markdown_tables, write_plots
from .schema import STUDY_TABLES, TABLES, VIEWS
from .store import aggregate, connect_readonly, find_run_dirs
from .study_tables import load_study_tasks, paired_significance

__all__ = ["STUDY_TABLES", "TABLES", "VIEWS", "ExpectationsError", "aggregate", "connect_readonly", "find_run_dirs",
           "format_table", "load_expectations", "load_study_tasks", "markdown_tables", "paired_significance",
           "read_expectations", "write_plots"]
