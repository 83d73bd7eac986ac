"""Tables and views of results.duckdb, each column documented once (the text becomes a DuckDB COMMENT).

Adding a view is one entry in VIEWS; adding a column is one entry in TABLES (existing files gain it
on the next aggregate, as NULL for old rows). STUDY_TABLES hold what is known per study rather than per
run (the paper's claims a study sets out to reproduce); aggregate creates them but never writes them.
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
        ("status", "VARCHAR", "training status: ok | failed | skipped (an input stage failed: data, tokenizer, "
                              "base model) | missing (no train.json in the run directory)"),
        ("error", "VARCHAR", "why training failed or was skipped (NULL when ok)"),
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
        ("memory_avg_mb", "DOUBLE", "training memory per optimizer step, MB: mean over the steps (memory_source)"),
        ("memory_p99_mb", "DOUBLE", "training memory per optimizer step, MB: 99th percentile"),
        ("memory_max_mb", "DOUBLE", "training memory per optimizer step, MB: maximum"),
        ("memory_source", "VARCHAR", "what the per-step memory measures: cuda_max_memory_allocated_per_step (the "
                                     "step's CUDA peak, on rank 0 when data parallel) | process_rss_per_step (CPU)"),
        ("model_flops", "DOUBLE", "model FLOPs of the training steps (forward and backward, trainable-aware 6N "
                                  "rule, peftlab.train.flops_per_token_pair), all devices together"),
        ("mfu", "DOUBLE", "model FLOPs utilisation: model_flops / wall time / the GPUs' dense peak (NULL on CPU "
                          "or a GPU not in peftlab.train.PEAK_FLOPS)"),
        ("adapter_bytes", "BIGINT", "bytes of the method's weight files a run ships (its .safetensors)"),
        ("precision", "VARCHAR", "training precision: fp32 | bf16 | fp16"),
        ("devices", "INTEGER", "data-parallel processes the run trained in (GPUs, or gloo CPU processes)"),
        ("best_dev_score", "DOUBLE", "best dev score seen (see dev_metric)"),
        ("dev_metric", "VARCHAR", "metric behind best_dev_score, e.g. dev_loss"),
        ("best_step", "INTEGER", "step of the best dev score"),
        ("time_to_best_s", "DOUBLE", "wall time until the best dev score, seconds"),
        ("stopped_early", "BOOLEAN", "training stopped before its step limit"),
        ("versions", "JSON", "package versions and git revision, e.g. versions->>'torch'"),
        ("device", "VARCHAR", "training device"),
        ("started_at", "TIMESTAMP", "training start, UTC"),
        ("finished_at", "TIMESTAMP", "training end, UTC"),
        ("eval_status", "VARCHAR", "status in eval.json: ok | partial (a forgetting step failed: eval_error; the "
                                 "scores before it are kept) | failed | skipped; NULL when the file is missing"),
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
        ("merged", "BOOLEAN", "the run's LoRA/IA3 weights were folded into the base weights before timing; "
                              "false: the model as trained"),
        ("deployed", "BOOLEAN", "the figure a deployment sees: the merged row of a mergeable method (LoRA, IA3), "
                                "the only row of the others; the views use these rows"),
        ("latency_ms_median", "DOUBLE", "median latency per batch, ms"),
        ("latency_ms_p10", "DOUBLE", "10th percentile latency, ms"),
        ("latency_ms_p90", "DOUBLE", "90th percentile latency, ms"),
        ("latency_ms_mean", "DOUBLE", "mean latency, ms"),
        ("latency_ms_std", "DOUBLE", "standard deviation of latency, ms"),
        ("latency_cv", "DOUBLE", "coefficient of variation of latency (std / mean)"),
        ("base_latency_ms_median", "DOUBLE", "median latency of the un-adapted base model, timed in the same "
                                             "process, rounds and inputs, ms"),
        ("base_latency_ms_p10", "DOUBLE", "10th percentile latency of the base model, ms"),
        ("base_latency_ms_p90", "DOUBLE", "90th percentile latency of the base model, ms"),
        ("base_latency_cv", "DOUBLE", "coefficient of variation of the base model's latency"),
        ("ratio_to_base", "DOUBLE", "latency / base model latency: median over repeats of the ratio of the two "
                                    "calls in one repeat (peftlab/bench.py)"),
        ("ratio_p10", "DOUBLE", "10th percentile of the per-repeat ratios"),
        ("ratio_p90", "DOUBLE", "90th percentile of the per-repeat ratios"),
        ("ratio_cv", "DOUBLE", "coefficient of variation of the per-repeat ratios"),
        ("throughput_items_per_s", "DOUBLE", "items (sequences) per second, from the median latency"),
        ("peak_memory_mb", "DOUBLE", "peak memory of the benchmark process, MB: the run's model, its merged copy "
                                     "and the base model were all loaded (an upper bound for one model)"),
        ("extra", "JSON", "any other keys of the measurement"),
    ]),
}

# name -> (table comment, [(column, type, comment), ...]); keyed by study, loaded by load_expectations.
STUDY_TABLES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "paper_claims": ("Headline figures of the paper a study reproduces, one row per claim, from "
                     "config/studies/<study>.expected.yaml (peftlab.results.load_expectations).", [
        ("study", "VARCHAR", "study (config) name the claims belong to"),
        ("claim_id", "VARCHAR", "short identifier of the claim, unique within the study"),
        ("position", "INTEGER", "order of the claim in the expectations file"),
        ("claim", "VARCHAR", "what the paper says, in words"),
        ("paper", "VARCHAR", "the paper (authors, year, title, venue)"),
        ("source", "VARCHAR", "where in the paper the figure is (abstract, table, figure)"),
        ("note", "VARCHAR", "how the comparison differs from the paper's setting, if it does"),
        ("metric", "VARCHAR", "run_metrics.metric compared; NULL when this study cannot measure the claim"),
        ("scale", "DOUBLE", "measured values (and differences) are multiplied by this, e.g. 100 for points"),
        ("subset", "VARCHAR", "test subset pattern (zero-shot language, retained pair); NULL: the headline test set"),
        ("subset_re", "VARCHAR", "subset as a regular expression"),
        ("detector", "VARCHAR", "OOD detector of ood_* metrics, e.g. msp"),
        ("statistic", "VARCHAR", "value (mean of runs) | difference (runs - baseline) | ratio (runs / baseline)"),
        ("comparison", "VARCHAR", "the selections compared, in words"),
        ("runs_task_re", "VARCHAR", "tasks of the claim's runs (regular expression)"),
        ("runs_method_re", "VARCHAR", "method entries of the claim's runs (regular expression)"),
        ("runs_budget_re", "VARCHAR", "budgets of the claim's runs (regular expression)"),
        ("runs_pick", "VARCHAR", "per task: mean over configurations | best_dev (lowest dev loss) | spread (std)"),
        ("baseline_task_re", "VARCHAR", "tasks of the baseline; NULL: the runs' tasks, paired task by task"),
        ("baseline_method_re", "VARCHAR", "method entries of the baseline (regular expression)"),
        ("baseline_budget_re", "VARCHAR", "budgets of the baseline (regular expression)"),
        ("baseline_pick", "VARCHAR", "per task: mean | best_dev | spread, as runs_pick"),
        ("expected", "DOUBLE", "the paper's figure, on the scale of `measured`"),
        ("tolerance", "DOUBLE", "agreement band around expected"),
        ("low", "DOUBLE", "lowest measured value that agrees (NULL: unbounded)"),
        ("high", "DOUBLE", "highest measured value that agrees (NULL: unbounded)"),
        ("expectations_file", "VARCHAR", "file the claim was loaded from"),
        ("loaded_at", "TIMESTAMP", "when the claim was loaded, UTC"),
    ]),
    "study_tasks": ("The study's tasks as its config describes them (peftlab.results.load_study_tasks), one row "
                    "per task: what groups runs beyond their names, e.g. the language-pair distance.", [
        ("study", "VARCHAR", "study (config) name"),
        ("task", "VARCHAR", "task name as in the config (runs.task without a ~variant suffix)"),
        ("kind", "VARCHAR", "translation | classification"),
        ("source_lang", "VARCHAR", "source language (translation)"),
        ("target_lang", "VARCHAR", "target language (translation)"),
        ("language", "VARCHAR", "training language (classification)"),
        ("distance", "VARCHAR", "the config's `distance` of the pair from English, e.g. close | distant"),
    ]),
    "mt_significance": ("Paired bootstrap resampling (sacrebleu, 1,000 resamples) of every ok translation run "
                        "against the full fine-tuning run of the same study, task and seed "
                        "(peftlab.results.paired_significance), one row per (run, metric).", [
        ("study", "VARCHAR", "study (config) name"),
        ("run_id", "VARCHAR", "the run tested (runs.run_id)"),
        ("baseline_run_id", "VARCHAR", "the full fine-tuning run it is compared with"),
        ("metric", "VARCHAR", "bleu | chrf"),
        ("score", "DOUBLE", "the run's corpus score"),
        ("baseline_score", "DOUBLE", "the baseline's corpus score"),
        ("bootstrap_mean", "DOUBLE", "the run's mean score over the resamples"),
        ("ci95", "DOUBLE", "half-width of the run's 95% confidence interval"),
        ("p_value", "DOUBLE", "probability of a difference at least this large by chance (H0: no difference)"),
        ("n_examples", "INTEGER", "test sentences"),
        ("signature", "VARCHAR", "sacrebleu signature of the test (metric, seed, resamples)"),
        ("inputs_sha256", "VARCHAR", "hash of both hypothesis files and the references: unchanged, not retested"),
    ]),
}

# Per run: test-split headline metrics side by side and latency at batch 1 and 16. Per-layer,
# per-detector and per-subset rows are left out so they never blend into the headline numbers.
# Latency prefers the generate task, then the longest seq_len measured (bench_* columns say which), and
# is the deployed figure: LoRA and IA3 merged into the base weights (latency_merged says so). The ratio to
# the base model (timed beside it in one process) is the comparable figure; absolute milliseconds move with
# the machine's load. Records from before the ratio existed have deployed NULL: their only row counts.
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
        arg_max(ratio_to_base, struct_pack(g := task = 'generate', s := seq_len)) AS ratio,
        arg_max(ratio_cv, struct_pack(g := task = 'generate', s := seq_len)) AS ratio_cv,
        arg_max(merged, struct_pack(g := task = 'generate', s := seq_len)) AS merged,
        arg_max(task, struct_pack(g := task = 'generate', s := seq_len)) AS bench_task,
        max(seq_len) FILTER (WHERE task = 'generate') AS generate_seq_len,
        max(seq_len) AS any_seq_len
    FROM benchmarks WHERE batch_size IN (1, 16) AND deployed IS NOT FALSE
    GROUP BY run_id, batch_size
)
SELECT r.run_id, r.study, r.task, r.task_kind, r.method, r.method_family, r.budget, r.budget_target,
    r.realised_fraction, r.rel_error, r.seed, r.status, r.error, r.trainable_params, r.total_params,
    r.steps, r.wall_time_s, r.time_to_best_s, r.peak_memory_mb AS train_peak_memory_mb,
    q.bleu, q.chrf, q.ter, q.accuracy, q.macro_f1,
    CASE WHEN r.task_kind = 'translation' THEN 'chrf' ELSE 'accuracy' END AS quality_metric,
    CASE WHEN r.task_kind = 'translation' THEN q.chrf ELSE q.accuracy END AS quality,
    l1.latency_ms AS latency_ms_b1, l16.latency_ms AS latency_ms_b16,
    l1.ratio AS latency_ratio_b1, l16.ratio AS latency_ratio_b16,
    l1.ratio_cv AS latency_ratio_cv_b1, l16.ratio_cv AS latency_ratio_cv_b16,
    coalesce(l1.merged, l16.merged) AS latency_merged,
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
    avg(realised_fraction) AS realised_fraction,
    count(*) FILTER (WHERE status = 'ok') AS n_seeds,
    count(*) FILTER (WHERE status <> 'ok') AS n_failed,
    round(avg(trainable_params))::BIGINT AS trainable_params,
    avg(bleu) AS bleu, avg(chrf) AS chrf, avg(ter) AS ter,
    avg(accuracy) AS accuracy, avg(macro_f1) AS macro_f1,
    avg(latency_ms_b1) AS latency_ms_b1, avg(latency_ms_b16) AS latency_ms_b16,
    exp(avg(ln(latency_ratio_b1))) AS latency_ratio_b1, max(latency_ratio_cv_b1) AS latency_ratio_cv_b1,
    exp(avg(ln(latency_ratio_b16))) AS latency_ratio_b16, max(latency_ratio_cv_b16) AS latency_ratio_cv_b16,
    bool_or(latency_merged) AS latency_merged
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
# all three axes and better on one; NULL when an axis was not measured. The latency axis is the batch-1
# ratio to the base model (geometric mean over seeds) of the deployed variant (merged LoRA/IA3);
# latency_ratio_cv_b1 is its spread (the largest CV of per-repeat ratios over the seeds).
_PARETO = """
WITH c AS (
    SELECT study, task, method, budget,
        any_value(budget_target) AS budget_target,
        avg(realised_fraction) AS realised_fraction,
        any_value(quality_metric) AS quality_metric,
        avg(quality) AS quality,
        exp(avg(ln(latency_ratio_b1))) AS latency_ratio_b1,
        max(latency_ratio_cv_b1) AS latency_ratio_cv_b1,
        bool_or(latency_merged) AS latency_merged,
        avg(latency_ms_b1) AS latency_ms_b1,
        round(avg(trainable_params))::BIGINT AS trainable_params
    FROM run_summary WHERE status = 'ok'
    GROUP BY study, task, method, budget
)
SELECT a.*,
    CASE WHEN a.quality IS NULL OR a.latency_ratio_b1 IS NULL OR a.trainable_params IS NULL THEN NULL
    ELSE NOT EXISTS (
        SELECT 1 FROM c b
        WHERE b.study = a.study AND b.task = a.task
          AND b.quality >= a.quality AND b.latency_ratio_b1 <= a.latency_ratio_b1
          AND b.trainable_params <= a.trainable_params
          AND (b.quality > a.quality OR b.latency_ratio_b1 < a.latency_ratio_b1
               OR b.trainable_params < a.trainable_params))
    END AS on_front
FROM c a
ORDER BY a.study, a.task, a.quality DESC NULLS LAST
"""

_TRAINING_COST = """
SELECT study, task, method, budget,
    any_value(budget_target) AS budget_target,
    avg(realised_fraction) AS realised_fraction,
    count(*) AS n_seeds,
    round(avg(trainable_params))::BIGINT AS trainable_params,
    avg(steps) AS steps,
    avg(wall_time_s) AS wall_time_s,
    avg(time_per_step_s) AS time_per_step_s,
    avg(tokens_per_s) AS tokens_per_s,
    avg(time_to_best_s) AS time_to_best_s_mean,
    stddev_samp(time_to_best_s) AS time_to_best_s_std,
    avg(peak_memory_mb) AS peak_memory_mb_mean,
    max(peak_memory_mb) AS peak_memory_mb_max,
    avg(memory_avg_mb) AS memory_avg_mb_mean,
    avg(memory_p99_mb) AS memory_p99_mb_mean,
    avg(model_flops) AS model_flops_mean,
    avg(mfu) AS mfu_mean,
    avg(adapter_bytes) AS adapter_bytes_mean
FROM runs WHERE status = 'ok'
GROUP BY study, task, method, budget
ORDER BY study, task, method, budget_target NULLS FIRST
"""

_SEED_SPREAD = """
SELECT r.study, r.task, r.method, r.budget,
    any_value(r.budget_target) AS budget_target, avg(r.realised_fraction) AS realised_fraction,
    e.split, e.metric, e.detector, e.layer, e.subset,
    count(*) AS n_seeds,
    avg(e.value) AS mean,
    stddev_samp(e.value) AS std,
    min(e.value) AS min,
    max(e.value) AS max
FROM evaluations e JOIN runs r USING (run_id)
WHERE r.status = 'ok'
GROUP BY r.study, r.task, r.method, r.budget, e.split, e.metric, e.detector, e.layer, e.subset
ORDER BY r.study, r.task, r.method, r.budget, e.split, e.metric, e.detector, e.layer, e.subset
"""

# Every measurement of every ok run in one long table, the vocabulary of paper_claims.metric:
# - test-split evaluation metrics (bleu, chrf, ter, accuracy, macro_f1, ood_auroc, ood_fpr95, ...) with
#   their subset (zero-shot language, retained pretraining pair; NULL for the headline test set and for OOD
#   rows) and detector; per-layer rows are summarised as cka_mean;
# - <metric>_vs_full: the same minus the run of method entry `full` with the same task and seed;
# - run-level figures: wall_time_s, time_per_step_s, tokens_per_s, time_to_best_s, train_peak_memory_mb,
#   steps, trainable_params, realised_fraction, latency_ms_b1, latency_ms_b16, latency_ratio_b1,
#   latency_ratio_b16 (deployed variant: merged LoRA/IA3).
# dev_rank orders runs by their best dev score, lower is better (dev losses as they are).
_RUN_METRICS = """
WITH ok AS (
    SELECT s.run_id, s.study, s.task, s.method, s.budget, s.seed,
        CASE WHEN r.dev_metric IS NULL OR r.dev_metric LIKE '%loss%' THEN r.best_dev_score
             ELSE -r.best_dev_score END AS dev_rank,
        s.wall_time_s, r.time_per_step_s, r.tokens_per_s, s.time_to_best_s, s.train_peak_memory_mb, s.steps,
        s.trainable_params, s.realised_fraction, s.latency_ms_b1, s.latency_ms_b16, s.latency_ratio_b1,
        s.latency_ratio_b16
    FROM run_summary s JOIN runs r USING (run_id)
    WHERE s.status = 'ok'
), ev AS (
    SELECT o.run_id, o.study, o.task, o.method, o.budget, o.seed, o.dev_rank, e.metric,
        CASE WHEN starts_with(e.metric, 'ood_') THEN NULL ELSE e.subset END AS subset, e.detector, e.value
    FROM ok o JOIN evaluations e USING (run_id)
    WHERE e.split = 'test' AND e.layer IS NULL
), cka AS (
    SELECT o.run_id, o.study, o.task, o.method, o.budget, o.seed, o.dev_rank, 'cka_mean' AS metric,
        NULL::VARCHAR AS subset, NULL::VARCHAR AS detector, avg(e.value) AS value
    FROM ok o JOIN evaluations e USING (run_id)
    -- a method that moves the input's positions (prefix tuning) changes layer 0 before training: not comparable
    WHERE e.metric = 'cka' AND e.layer IS NOT NULL AND coalesce(e.extra->>'comparable', 'true') = 'true'
    GROUP BY ALL
), run_level AS (
    UNPIVOT (
        SELECT run_id, study, task, method, budget, seed, dev_rank,
            wall_time_s::DOUBLE AS wall_time_s, time_per_step_s::DOUBLE AS time_per_step_s,
            tokens_per_s::DOUBLE AS tokens_per_s, time_to_best_s::DOUBLE AS time_to_best_s,
            train_peak_memory_mb::DOUBLE AS train_peak_memory_mb, steps::DOUBLE AS steps,
            trainable_params::DOUBLE AS trainable_params, realised_fraction::DOUBLE AS realised_fraction,
            latency_ms_b1::DOUBLE AS latency_ms_b1, latency_ms_b16::DOUBLE AS latency_ms_b16,
            latency_ratio_b1::DOUBLE AS latency_ratio_b1, latency_ratio_b16::DOUBLE AS latency_ratio_b16
        FROM ok)
    ON wall_time_s, time_per_step_s, tokens_per_s, time_to_best_s, train_peak_memory_mb, steps,
        trainable_params, realised_fraction, latency_ms_b1, latency_ms_b16, latency_ratio_b1, latency_ratio_b16
    INTO NAME metric VALUE value
), measured AS (
    SELECT * FROM ev
    UNION ALL SELECT * FROM cka
    UNION ALL SELECT run_id, study, task, method, budget, seed, dev_rank, metric, NULL, NULL, value FROM run_level
)
SELECT * FROM measured
UNION ALL
SELECT m.run_id, m.study, m.task, m.method, m.budget, m.seed, m.dev_rank, m.metric || '_vs_full',
    m.subset, m.detector, m.value - f.value
FROM ev m JOIN ev f ON f.study = m.study AND f.task = m.task AND f.seed = m.seed AND f.method = 'full'
    AND f.metric = m.metric AND f.subset IS NOT DISTINCT FROM m.subset
    AND f.detector IS NOT DISTINCT FROM m.detector
"""

# One row per paper claim: what the study measured beside what the paper reports, and whether they agree.
# Each side (runs, baseline) is reduced per task: runs of one configuration (task, method, budget) are
# averaged over seeds, then the configurations matching the side are combined by its pick (mean, best_dev:
# the one with the lowest dev loss, spread: their standard deviation). Across tasks: value = mean of the
# runs side; difference and ratio pair the two sides task by task when the baseline names no tasks of its
# own (ratios as a geometric mean), else compare the two sides' means. `scale` applies to value and
# difference. status: agrees (measured within [low, high]), disagrees, not measured (no runs yet),
# no figure (the paper gives no number), not measurable here (the study cannot measure the claim).
_REPRODUCTION = """
WITH sides AS (
    SELECT c.study, c.claim_id, c.metric, c.subset_re, c.detector, s.side,
        CASE s.side WHEN 'runs' THEN c.runs_task_re ELSE coalesce(c.baseline_task_re, c.runs_task_re) END AS task_re,
        CASE s.side WHEN 'runs' THEN c.runs_method_re ELSE c.baseline_method_re END AS method_re,
        CASE s.side WHEN 'runs' THEN c.runs_budget_re ELSE c.baseline_budget_re END AS budget_re,
        CASE s.side WHEN 'runs' THEN c.runs_pick ELSE c.baseline_pick END AS pick
    FROM paper_claims c CROSS JOIN (VALUES ('runs'), ('baseline')) s(side)
    WHERE c.metric IS NOT NULL AND (s.side = 'runs' OR c.statistic <> 'value')
), configs AS (
    SELECT s.study, s.claim_id, s.side, s.pick, m.task, m.method, m.budget,
        avg(m.value) AS value, avg(m.dev_rank) AS dev_rank, count(*) AS n_runs
    FROM sides s JOIN run_metrics m ON m.study = s.study AND m.metric = s.metric
        AND regexp_full_match(m.task, s.task_re) AND regexp_full_match(m.method, s.method_re)
        AND regexp_full_match(m.budget, s.budget_re)
        AND (CASE WHEN s.subset_re IS NULL THEN m.subset IS NULL
                  ELSE m.subset IS NOT NULL AND regexp_full_match(m.subset, s.subset_re) END)
        AND m.detector IS NOT DISTINCT FROM s.detector
    GROUP BY ALL
), per_task AS (
    SELECT study, claim_id, side, task,
        CASE any_value(pick) WHEN 'best_dev' THEN arg_min(value, dev_rank)
                             WHEN 'spread' THEN stddev_samp(value)
                             ELSE avg(value) END AS value,
        sum(n_runs) AS n_runs
    FROM configs GROUP BY study, claim_id, side, task
), runs_side AS (
    SELECT * FROM per_task WHERE side = 'runs' AND value IS NOT NULL
), base_side AS (
    SELECT * FROM per_task WHERE side = 'baseline' AND value IS NOT NULL
), paired AS (
    SELECT r.study, r.claim_id, count(*) AS n_tasks, sum(r.n_runs) AS n_runs, sum(b.n_runs) AS n_baseline_runs,
        avg(r.value - b.value) AS difference,
        exp(avg(ln(r.value / b.value)) FILTER (WHERE r.value > 0 AND b.value > 0)) AS ratio
    FROM runs_side r JOIN base_side b USING (study, claim_id, task)
    GROUP BY r.study, r.claim_id
), runs_agg AS (
    SELECT study, claim_id, count(*) AS n_tasks, sum(n_runs) AS n_runs, avg(value) AS value
    FROM runs_side GROUP BY study, claim_id
), base_agg AS (
    SELECT study, claim_id, count(*) AS n_tasks, sum(n_runs) AS n_runs, avg(value) AS value
    FROM base_side GROUP BY study, claim_id
), m AS (
    SELECT c.study, c.claim_id,
        CASE WHEN c.statistic = 'value' THEN r.value * c.scale
             WHEN c.baseline_task_re IS NULL AND c.statistic = 'difference' THEN p.difference * c.scale
             WHEN c.baseline_task_re IS NULL THEN p.ratio
             WHEN c.statistic = 'difference' THEN (r.value - b.value) * c.scale
             ELSE r.value / nullif(b.value, 0) END AS measured,
        CASE WHEN c.statistic <> 'value' AND c.baseline_task_re IS NULL THEN p.n_tasks ELSE r.n_tasks END AS n_tasks,
        CASE WHEN c.statistic <> 'value' AND c.baseline_task_re IS NULL THEN p.n_runs ELSE r.n_runs END AS n_runs,
        CASE WHEN c.statistic = 'value' THEN NULL
             WHEN c.baseline_task_re IS NULL THEN p.n_baseline_runs ELSE b.n_runs END AS n_baseline_runs
    FROM paper_claims c
    LEFT JOIN paired p USING (study, claim_id)
    LEFT JOIN runs_agg r USING (study, claim_id)
    LEFT JOIN base_agg b USING (study, claim_id)
)
SELECT c.study, c.claim_id, c.claim, c.metric, c.subset, c.detector, c.statistic, c.comparison,
    c.expected, c.low, c.high, m.measured, m.measured - c.expected AS gap,
    CASE WHEN c.metric IS NULL THEN 'not measurable here'
         WHEN m.measured IS NULL THEN 'not measured'
         WHEN c.low IS NULL AND c.high IS NULL THEN 'no figure'
         WHEN m.measured >= coalesce(c.low, m.measured) AND m.measured <= coalesce(c.high, m.measured)
             THEN 'agrees'
         ELSE 'disagrees' END AS status,
    coalesce(m.n_tasks, 0)::BIGINT AS n_tasks, coalesce(m.n_runs, 0)::BIGINT AS n_runs,
    m.n_baseline_runs::BIGINT AS n_baseline_runs,
    c.source, c.note, c.paper
FROM paper_claims c JOIN m USING (study, claim_id)
ORDER BY c.study, c.position
"""

# Language-pair distance (study_tasks.distance, from the config) over quality_vs_budget: per study, distance,
# method and budget, the mean over the pairs of that distance. Task variants (en-de~n1000) keep their suffix
# as `variant`, so data sizes are not blended.
_QUALITY_BY_DISTANCE = """
SELECT q.study, t.distance, q.method, q.budget,
    coalesce(nullif(split_part(q.task, '~', 2), ''), '') AS variant,
    any_value(q.budget_target) AS budget_target,
    avg(q.realised_fraction) AS realised_fraction,
    any_value(q.quality_metric) AS quality_metric,
    count(*) AS n_tasks,
    string_agg(q.task, ', ' ORDER BY q.task) AS tasks,
    avg(q.quality_mean) AS quality_mean,
    avg(q.delta_vs_full_mean) AS delta_vs_full_mean,
    min(q.delta_vs_full_mean) AS delta_vs_full_min,
    max(q.delta_vs_full_mean) AS delta_vs_full_max
FROM quality_vs_budget q
JOIN study_tasks t ON t.study = q.study AND t.task = split_part(q.task, '~', 1)
WHERE t.distance IS NOT NULL
GROUP BY ALL
ORDER BY q.study, t.distance, q.method, budget_target NULLS FIRST
"""

# Each SparseAdapter run (method_family sparse) beside the dense runs of its base method (method_config.base)
# with the same study, task, seed and budget target: equal budget, pruned or not.
_SPARSE_VS_DENSE = """
WITH s AS (
    SELECT r.run_id, r.study, r.task, r.seed, r.method, r.budget, r.budget_target,
        r.method_config->>'base' AS base_family,
        TRY_CAST(r.method_config->>'sparsity' AS DOUBLE) AS sparsity,
        TRY_CAST(r.method_config->>'large' AS BOOLEAN) AS large,
        r.method_config->>'scoring' AS scoring,
        q.trainable_params, q.realised_fraction, q.quality, q.quality_metric
    FROM runs r JOIN run_summary q USING (run_id)
    WHERE r.status = 'ok' AND r.method_family = 'sparse'
)
SELECT s.study, s.task, s.budget, any_value(s.budget_target) AS budget_target,
    avg(s.realised_fraction) AS sparse_realised_fraction, avg(d.realised_fraction) AS dense_realised_fraction,
    s.method AS sparse_method, any_value(s.sparsity) AS sparsity, any_value(s.large) AS large,
    any_value(s.scoring) AS scoring, d.method AS dense_method,
    any_value(s.quality_metric) AS quality_metric,
    count(*) AS n_paired,
    round(avg(s.trainable_params))::BIGINT AS sparse_trainable_params,
    round(avg(d.trainable_params))::BIGINT AS dense_trainable_params,
    avg(s.quality) AS sparse_quality, avg(d.quality) AS dense_quality,
    avg(s.quality - d.quality) AS delta_mean, stddev_samp(s.quality - d.quality) AS delta_std
FROM s JOIN run_summary d ON d.status = 'ok' AND d.study = s.study AND d.task = s.task AND d.seed = s.seed
    AND d.method_family = s.base_family AND d.budget_target = s.budget_target
GROUP BY s.study, s.task, s.budget, s.method, d.method
ORDER BY s.study, s.task, s.budget, s.method, d.method
"""

# Each CoDA run beside the bottleneck-adapter runs (parallel, Houlsby, Pfeiffer) of the same study, task,
# seed and budget target, per benchmark setting: speed-up = adapter latency / CoDA latency (geometric mean
# over seeds), each as its ratio to the base model it was timed beside (the two runs were benchmarked in
# separate jobs, whose absolute milliseconds differ with the machine's load), and the quality CoDA gives up.
_CODA_SPEEDUP = """
WITH pairs AS (
    SELECT c.run_id, c.study, c.task, c.budget, c.budget_target, c.method, c.quality_metric,
        c.realised_fraction AS coda_realised_fraction, a.realised_fraction AS adapter_realised_fraction,
        TRY_CAST(r.method_config->>'k_ratio' AS DOUBLE) AS k_ratio,
        a.run_id AS adapter_run_id, a.method AS adapter_method, c.quality - a.quality AS quality_delta
    FROM run_summary c JOIN runs r USING (run_id)
    JOIN run_summary a ON a.status = 'ok' AND a.study = c.study AND a.task = c.task AND a.seed = c.seed
        AND a.budget_target = c.budget_target AND a.method_family IN ('parallel', 'houlsby', 'pfeiffer')
    WHERE c.status = 'ok' AND c.method_family = 'coda'
)
SELECT p.study, p.task, p.budget, any_value(p.budget_target) AS budget_target,
    avg(p.coda_realised_fraction) AS coda_realised_fraction,
    avg(p.adapter_realised_fraction) AS adapter_realised_fraction, p.method AS coda_method,
    any_value(p.k_ratio) AS k_ratio, p.adapter_method, bc.task AS bench_task, bc.batch_size, bc.seq_len,
    count(*) AS n_paired,
    avg(ba.latency_ms_median) AS adapter_latency_ms, avg(bc.latency_ms_median) AS coda_latency_ms,
    exp(avg(ln(ba.ratio_to_base / bc.ratio_to_base))) AS speedup,
    any_value(p.quality_metric) AS quality_metric, avg(p.quality_delta) AS quality_delta
FROM pairs p
JOIN benchmarks bc ON bc.run_id = p.run_id AND bc.deployed IS NOT FALSE
JOIN benchmarks ba ON ba.run_id = p.adapter_run_id AND ba.task = bc.task AND ba.batch_size = bc.batch_size
    AND ba.seq_len IS NOT DISTINCT FROM bc.seq_len AND ba.deployed IS NOT FALSE
GROUP BY p.study, p.task, p.budget, p.method, p.adapter_method, bc.task, bc.batch_size, bc.seq_len
ORDER BY p.study, p.task, p.budget, p.method, p.adapter_method, bc.task, bc.batch_size, bc.seq_len
"""

# mt_significance over seeds: how often a configuration differs significantly from full fine-tuning.
_SIGNIFICANCE = """
SELECT r.study, r.task, r.method, r.budget,
    any_value(r.budget_target) AS budget_target, avg(r.realised_fraction) AS realised_fraction, m.metric,
    count(*) AS n_seeds,
    avg(m.score) AS score_mean, stddev_samp(m.score) AS score_std,
    avg(m.score - m.baseline_score) AS delta_vs_full_mean,
    max(m.p_value) AS p_value_max,
    count(*) FILTER (WHERE m.p_value < 0.05) AS n_significant_05
FROM mt_significance m JOIN runs r USING (run_id)
WHERE r.method <> 'full'
GROUP BY r.study, r.task, r.method, r.budget, m.metric
ORDER BY r.study, r.task, r.method, r.budget, m.metric
"""

# Per run, what adaptation moved: mean and lowest per-layer CKA to the base model, and whether the CKA can be
# compared with other methods' (comparable: false with the reason where a method changes layer 0 by its very
# mechanism, e.g. prefix tuning shifting positions). Retained quality is in run_metrics (subset = pretraining pair).
_FORGETTING = """
SELECT r.run_id, r.study, r.task, r.method, r.budget, r.budget_target, r.realised_fraction, r.seed,
    avg(e.value) AS cka_mean, min(e.value) AS cka_min, count(*) AS n_layers,
    bool_and(coalesce(e.extra->>'comparable', 'true') = 'true') AS comparable,
    any_value(e.extra->>'note') AS note
FROM evaluations e JOIN runs r USING (run_id)
WHERE r.status = 'ok' AND e.metric = 'cka' AND e.layer IS NOT NULL
GROUP BY ALL
ORDER BY ALL
"""

# name -> (comment, SQL); created in this order, so a view may use the ones above it. Every view that shows a
# budget label shows the realised fraction (trainable / total, mean over seeds) beside budget_target: a label
# is only within the solver's tolerance of what trained (issue 13).
VIEWS: dict[str, tuple[str, str]] = {
    "run_summary": ("One row per run: test BLEU/chrF/TER/accuracy/macro-F1, the task's quality metric "
                    "(chrF for translation, else accuracy), latency at batch 1 and 16 (ms and ratio to the base "
                    "model, with the ratio's CV; LoRA/IA3 merged: latency_merged).", _RUN_SUMMARY),
    "method_comparison": ("Per (study, task, budget, method): params, realised fraction, BLEU, chrF, TER, "
                          "median latency at batch 1 and 16 (means over ok seeds), latency ratio to the base "
                          "model (geometric mean) and its largest CV; LoRA/IA3 merged.", _METHOD_COMPARISON),
    "quality_vs_budget": ("Per (study, task, method, budget): quality mean/std over seeds and the delta "
                          "to full fine-tuning paired by seed.", _QUALITY_VS_BUDGET),
    "pareto": ("Per (study, task, method, budget): quality, batch-1 latency ratio to the base model (merged "
               "LoRA/IA3, as deployed) with its CV, trainable params and whether the configuration is on the "
               "Pareto front of quality, latency ratio and params.", _PARETO),
    "training_cost": ("Per (study, task, method, budget): training time, time to best dev score and "
                      "peak memory over ok seeds.", _TRAINING_COST),
    "seed_spread": ("Per (study, task, method, budget, split, metric, detector, layer, subset): mean, "
                    "std, min, max over seeds.", _SEED_SPREAD),
    "run_metrics": ("Every measurement of every ok run, long format (run_id, metric, subset, detector, "
                    "value): test metrics, <metric>_vs_full, cka_mean (comparable runs only, see forgetting), training "
                    "cost and latency.", _RUN_METRICS),
    "forgetting": ("Per run: mean and lowest per-layer CKA to the base model, and whether it is comparable with "
                   "other methods' (note: why not; run_metrics' cka_mean leaves those runs out).", _FORGETTING),
    "reproduction": ("Per paper claim (paper_claims): the study's measured figure beside the paper's, and "
                     "whether it agrees, disagrees or is not measured yet.", _REPRODUCTION),
    "quality_by_distance": ("Per (study, language-pair distance, method, budget): quality and delta to full "
                            "fine-tuning averaged over the pairs of that distance (study_tasks.distance).",
                            _QUALITY_BY_DISTANCE),
    "sparse_vs_dense": ("Per SparseAdapter configuration: quality beside the dense adapter of its base method at "
                        "the same budget, paired by seed.", _SPARSE_VS_DENSE),
    "coda_speedup": ("Per CoDA configuration and benchmark setting: latency speed-up over bottleneck adapters "
                     "of the same budget (from each run's ratio to the base model; geometric mean over seeds) "
                     "and the quality delta.", _CODA_SPEEDUP),
    "significance": ("Per (study, task, method, budget, metric): paired-bootstrap tests against full "
                     "fine-tuning over seeds (mt_significance).", _SIGNIFICANCE),
}

# The views `peftlab tables` prints by default, in order (run_summary has a row per run: too long).
REPORT_VIEWS = ("method_comparison", "quality_vs_budget", "quality_by_distance", "pareto", "training_cost",
                "sparse_vs_dense", "coda_speedup", "significance", "seed_spread", "reproduction")
