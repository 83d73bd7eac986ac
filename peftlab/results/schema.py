"""Tables and views of results.duckdb, each column documented once (the text becomes a DuckDB COMMENT).

Adding a view is one entry in VIEWS; adding a column is one entry in TABLES (existing files gain it
on the next aggregate, as NULL for old rows).
"""

# name -> (table comment, [(column, type, comment), ...]); every table has run_id first.
TABLES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "runs": ("One row per run (train.json, plus the status of eval.json and bench.json).", [
        ("run_id", "VARCHAR", "<study>/<task>/<method>/<budget>/seed<k>; joins every table"),
        ("study", "VARCHAR", "study (config) name"),
        ("task", "VARCHAR", "language pair or NLU task, e.g. en-de"),
        ("task_kind", "VARCHAR", "translation | classification | ..."),
        ("method", "VARCHAR", "adaptation method, e.g. full, lora, adapter, sparse-adapter, coda"),
        ("method_family", "VARCHAR", "family the method belongs to, e.g. lora"),
        ("budget", "VARCHAR", "budget as in the run path: a fraction such as 0.01, or none (no size knob)"),
        ("budget_target", "DOUBLE", "target trainable fraction of the base model; NULL without a size knob"),
        ("seed", "INTEGER", "random seed"),
        ("status", "VARCHAR", "training status: ok | failed | missing (no train.json in the run directory)"),
        ("error", "VARCHAR", "why training failed (NULL when ok)"),
        ("log_path", "VARCHAR", "training log file"),
        ("base_model", "VARCHAR", "base model name from the config"),
        ("base_model_id", "VARCHAR", "hub id, local path or build hash of the base model"),
        ("data_manifest_sha256", "VARCHAR", "hash of the data manifest the run trained on"),
        ("code_fingerprint", "VARCHAR", "fingerprint of the library code the run depended on"),
        ("method_config", "JSON", "resolved method hyperparameters"),
        ("train_config", "JSON", "resolved training configuration (lr, steps, ...)"),
        ("trainable_params", "BIGINT", "realised trainable parameters (excluding the task head)"),
        ("total_params", "BIGINT", "all parameters of the adapted model"),
        ("realised_fraction", "DOUBLE", "trainable_params / base model parameters"),
        ("rel_error", "DOUBLE", "(realised_fraction - budget_target) / budget_target"),
        ("head_params", "BIGINT", "trainable parameters of the task head, counted separately"),
        ("steps", "INTEGER", "optimizer steps run"),
        ("wall_time_s", "DOUBLE", "training wall time, seconds"),
        ("time_per_step_s", "DOUBLE", "mean seconds per optimizer step"),
        ("tokens_per_s", "DOUBLE", "training throughput, tokens per second"),
        ("peak_memory_mb", "DOUBLE", "peak training memory, MB"),
        ("best_dev_score", "DOUBLE", "best dev score seen (see dev_metric)"),
        ("dev_metric", "VARCHAR", "metric behind best_dev_score, e.g. dev_loss"),
        ("best_step", "INTEGER", "step of the best dev score"),
        ("time_to_best_s", "DOUBLE", "wall time until the best dev score, seconds"),
        ("stopped_early", "BOOLEAN", "training stopped before its step limit"),
        ("versions", "JSON", "package versions and git revision, e.g. versions->>'torch'"),
        ("device", "VARCHAR", "training device"),
        ("started_at", "TIMESTAMP", "training start, UTC"),
        ("finished_at", "TIMESTAMP", "training end, UTC"),
        ("eval_status", "VARCHAR", "status in eval.json; NULL when the file is missing"),
        ("eval_error", "VARCHAR", "error in eval.json, if any"),
        ("eval_info", "JSON", "other keys of eval.json: decoding settings, device, hypotheses_path, ..."),
        ("bench_status", "VARCHAR", "status in bench.json; NULL when the file is missing"),
        ("bench_error", "VARCHAR", "error in bench.json, if any"),
        ("run_dir", "VARCHAR", "directory the records were loaded from"),
        ("loaded_at", "TIMESTAMP", "when aggregate loaded this run, UTC"),
    ]),
    "training_curves": ("Training curve points from train.json, one row per logged step.", [
        ("run_id", "VARCHAR", "run (runs.run_id)"),
        ("step", "INTEGER", "optimizer step"),
        ("train_loss", "DOUBLE", "training loss"),
        ("dev_loss", "DOUBLE", "dev loss (NULL where not evaluated)"),
        ("lr", "DOUBLE", "learning rate"),
        ("elapsed_s", "DOUBLE", "wall time since training start, seconds"),
        ("extra", "JSON", "any other keys of the curve point"),
    ]),
    "evaluations": ("Evaluation metrics, long format: one row per (run, split, metric, detector, layer, "
                    "subset).", [
        ("run_id", "VARCHAR", "run (runs.run_id)"),
        ("split", "VARCHAR", "evaluated split, e.g. test"),
        ("metric", "VARCHAR", "bleu, chrf, ter, accuracy, macro_f1, ood_auroc, fpr95, cka, ..."),
        ("value", "DOUBLE", "metric value"),
        ("signature", "VARCHAR", "how the value was computed (sacrebleu-style signature)"),
        ("detector", "VARCHAR", "OOD detector, for OOD metrics"),
        ("layer", "VARCHAR", "layer, for per-layer metrics such as cka"),
        ("subset", "VARCHAR", "data subset, for metrics on part of a split"),
        ("n_examples", "INTEGER", "examples evaluated"),
        ("extra", "JSON", "any other keys of the metric record"),
    ]),
    "benchmarks": ("Inference benchmark measurements from bench.json, one row per (run, task, batch, "
                   "length).", [
        ("run_id", "VARCHAR", "run (runs.run_id)"),
        ("device", "VARCHAR", "benchmark device"),
        ("threads", "INTEGER", "CPU threads used"),
        ("task", "VARCHAR", "benchmarked operation: generate | forward"),
        ("batch_size", "INTEGER", "batch size"),
        ("seq_len", "INTEGER", "input length, tokens"),
        ("new_tokens", "INTEGER", "tokens generated per sequence (generate task)"),
        ("warmup", "INTEGER", "untimed warm-up iterations"),
        ("repeats", "INTEGER", "timed iterations"),
        ("latency_ms_median", "DOUBLE", "median latency per batch, ms"),
        ("latency_ms_p10", "DOUBLE", "10th percentile latency, ms"),
        ("latency_ms_p90", "DOUBLE", "90th percentile latency, ms"),
        ("latency_ms_mean", "DOUBLE", "mean latency, ms"),
        ("latency_ms_std", "DOUBLE", "standard deviation of latency, ms"),
        ("throughput_items_per_s", "DOUBLE", "items (sequences) per second"),
        ("peak_memory_mb", "DOUBLE", "peak inference memory, MB"),
        ("extra", "JSON", "any other keys of the measurement"),
    ]),
}

# Per run: test-split headline metrics side by side and latency at batch 1 and 16. Per-layer,
# per-detector and per-subset rows are left out so they never blend into the headline numbers.
# Latency prefers the generate task, then the longest seq_len measured (bench_* columns say which).
# Metrics and latency of runs that did not train ok are NULL, so stale eval files never count.
_RUN_SUMMARY = """
WITH q AS (
    SELECT run_id,
        avg(value) FILTER (WHERE metric = 'bleu') AS bleu,
        avg(value) FILTER (WHERE metric = 'chrf') AS chrf,
        avg(value) FILTER (WHERE metric = 'ter') AS ter,
        avg(value) FILTER (WHERE metric = 'accuracy') AS accuracy,
        avg(value) FILTER (WHERE metric = 'macro_f1') AS macro_f1
    FROM evaluations
    WHERE split = 'test' AND detector IS NULL AND layer IS NULL AND subset IS NULL
    GROUP BY run_id
), lat AS (
    SELECT run_id, batch_size,
        arg_max(latency_ms_median, struct_pack(g := task = 'generate', s := seq_len)) AS latency_ms,
        arg_max(task, struct_pack(g := task = 'generate', s := seq_len)) AS bench_task,
        max(seq_len) FILTER (WHERE task = 'generate') AS generate_seq_len,
        max(seq_len) AS any_seq_len
    FROM benchmarks WHERE batch_size IN (1, 16)
    GROUP BY run_id, batch_size
)
SELECT r.run_id, r.study, r.task, r.task_kind, r.method, r.method_family, r.budget, r.budget_target,
    r.seed, r.status, r.error, r.trainable_params, r.total_params, r.realised_fraction, r.rel_error,
    r.steps, r.wall_time_s, r.time_to_best_s, r.peak_memory_mb AS train_peak_memory_mb,
    q.bleu, q.chrf, q.ter, q.accuracy, q.macro_f1,
    CASE WHEN r.task_kind = 'translation' THEN 'chrf' ELSE 'accuracy' END AS quality_metric,
    CASE WHEN r.task_kind = 'translation' THEN q.chrf ELSE q.accuracy END AS quality,
    l1.latency_ms AS latency_ms_b1, l16.latency_ms AS latency_ms_b16,
    coalesce(l1.bench_task, l16.bench_task) AS bench_task,
    coalesce(l1.generate_seq_len, l1.any_seq_len, l16.generate_seq_len, l16.any_seq_len) AS bench_seq_len
FROM runs r
LEFT JOIN q ON q.run_id = r.run_id AND r.status = 'ok'
LEFT JOIN lat l1 ON l1.run_id = r.run_id AND l1.batch_size = 1 AND r.status = 'ok'
LEFT JOIN lat l16 ON l16.run_id = r.run_id AND l16.batch_size = 16 AND r.status = 'ok'
"""

_METHOD_COMPARISON = """
SELECT study, task, budget, method,
    any_value(method_family) AS method_family,
    any_value(budget_target) AS budget_target,
    count(*) FILTER (WHERE status = 'ok') AS n_seeds,
    count(*) FILTER (WHERE status <> 'ok') AS n_failed,
    round(avg(trainable_params))::BIGINT AS trainable_params,
    avg(realised_fraction) AS realised_fraction,
    avg(bleu) AS bleu, avg(chrf) AS chrf, avg(ter) AS ter,
    avg(accuracy) AS accuracy, avg(macro_f1) AS macro_f1,
    avg(latency_ms_b1) AS latency_ms_b1, avg(latency_ms_b16) AS latency_ms_b16
FROM run_summary
GROUP BY study, task, budget, method
ORDER BY study, task, budget_target NULLS FIRST, method
"""

# Deltas pair each run with the full fine-tuning run of the same study, task and seed.
_QUALITY_VS_BUDGET = """
WITH full_ft AS (
    SELECT study, task, seed, quality AS full_quality FROM run_summary
    WHERE method = 'full' AND status = 'ok'
)
SELECT s.study, s.task, s.method, s.budget,
    any_value(s.budget_target) AS budget_target,
    avg(s.realised_fraction) AS realised_fraction,
    any_value(s.quality_metric) AS quality_metric,
    count(s.quality) AS n_seeds,
    avg(s.quality) AS quality_mean,
    stddev_samp(s.quality) AS quality_std,
    avg(f.full_quality) AS full_quality_mean,
    count(s.quality - f.full_quality) AS n_paired,
    avg(s.quality - f.full_quality) AS delta_vs_full_mean,
    stddev_samp(s.quality - f.full_quality) AS delta_vs_full_std
FROM run_summary s LEFT JOIN full_ft f ON f.study = s.study AND f.task = s.task AND f.seed = s.seed
WHERE s.status = 'ok'
GROUP BY s.study, s.task, s.method, s.budget
ORDER BY s.study, s.task, s.method, budget_target NULLS FIRST
"""

# A configuration is on the front unless another one in the same study/task is at least as good on
# all three axes and better on one; NULL when an axis was not measured.
_PARETO = """
WITH c AS (
    SELECT study, task, method, budget,
        any_value(budget_target) AS budget_target,
        any_value(quality_metric) AS quality_metric,
        avg(quality) AS quality,
        avg(latency_ms_b1) AS latency_ms_b1,
        round(avg(trainable_params))::BIGINT AS trainable_params
    FROM run_summary WHERE status = 'ok'
    GROUP BY study, task, method, budget
)
SELECT a.*,
    CASE WHEN a.quality IS NULL OR a.latency_ms_b1 IS NULL OR a.trainable_params IS NULL THEN NULL
    ELSE NOT EXISTS (
        SELECT 1 FROM c b
        WHERE b.study = a.study AND b.task = a.task
          AND b.quality >= a.quality AND b.latency_ms_b1 <= a.latency_ms_b1
          AND b.trainable_params <= a.trainable_params
          AND (b.quality > a.quality OR b.latency_ms_b1 < a.latency_ms_b1
               OR b.trainable_params < a.trainable_params))
    END AS on_front
FROM c a
ORDER BY a.study, a.task, a.quality DESC NULLS LAST
"""

_TRAINING_COST = """
SELECT study, task, method, budget,
    any_value(budget_target) AS budget_target,
    count(*) AS n_seeds,
    round(avg(trainable_params))::BIGINT AS trainable_params,
    avg(steps) AS steps,
    avg(wall_time_s) AS wall_time_s,
    avg(time_per_step_s) AS time_per_step_s,
    avg(tokens_per_s) AS tokens_per_s,
    avg(time_to_best_s) AS time_to_best_s_mean,
    stddev_samp(time_to_best_s) AS time_to_best_s_std,
    avg(peak_memory_mb) AS peak_memory_mb_mean,
    max(peak_memory_mb) AS peak_memory_mb_max
FROM runs WHERE status = 'ok'
GROUP BY study, task, method, budget
ORDER BY study, task, method, budget_target NULLS FIRST
"""

_SEED_SPREAD = """
SELECT r.study, r.task, r.method, r.budget, e.split, e.metric, e.detector, e.layer, e.subset,
    count(*) AS n_seeds,
    avg(e.value) AS mean,
    stddev_samp(e.value) AS std,
    min(e.value) AS min,
    max(e.value) AS max
FROM evaluations e JOIN runs r USING (run_id)
WHERE r.status = 'ok'
GROUP BY r.study, r.task, r.method, r.budget, e.split, e.metric, e.detector, e.layer, e.subset
ORDER BY ALL
"""

# name -> (comment, SQL); created in this order, so a view may use the ones above it.
VIEWS: dict[str, tuple[str, str]] = {
    "run_summary": ("One row per run: test BLEU/chrF/TER/accuracy/macro-F1, the task's quality metric "
                    "(chrF for translation, else accuracy), latency at batch 1 and 16.", _RUN_SUMMARY),
    "method_comparison": ("Per (study, task, budget, method): params, realised fraction, BLEU, chrF, TER, "
                          "median latency at batch 1 and 16; means over ok seeds.", _METHOD_COMPARISON),
    "quality_vs_budget": ("Per (study, task, method, budget): quality mean/std over seeds and the delta "
                          "to full fine-tuning paired by seed.", _QUALITY_VS_BUDGET),
    "pareto": ("Per (study, task, method, budget): quality, batch-1 latency, trainable params and whether "
               "the configuration is on the Pareto front of the three.", _PARETO),
    "training_cost": ("Per (study, task, method, budget): training time, time to best dev score and "
                      "peak memory over ok seeds.", _TRAINING_COST),
    "seed_spread": ("Per (study, task, method, budget, split, metric, detector, layer, subset): mean, "
                    "std, min, max over seeds.", _SEED_SPREAD),
}

# The views `peftlab tables` prints by default, in order (run_summary has a row per run: too long).
REPORT_VIEWS = ("method_comparison", "quality_vs_budget", "pareto", "training_cost", "seed_spread")
