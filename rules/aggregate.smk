# All run records of the study into results/results.duckdb. The database is shared by every study,
# so it is not a declared output (Snakemake would delete it, and other studies' rows, before the
# job); the declared output is this study's aggregation summary. A study with the paper's headline
# figures beside its config (config/studies/<study>.expected.yaml) loads them into paper_claims too.
EXPECTED = [f"config/studies/{STUDY}.expected.yaml"] if Path(f"config/studies/{STUDY}.expected.yaml").exists() else []
DATABASE = "results/results.duckdb"
SUMMARY = f"results/{STUDY}/aggregate.json"
if workflow.is_main_process and Path(SUMMARY).exists() and not Path(DATABASE).exists():
    # A summary of rows that are gone is stale: without it, Snakemake rebuilds the database from the runs.
    Path(SUMMARY).unlink()
RUN_TASKS = sorted({grid.base_name(run.task) for run in RUNS})  # config task names, variants folded in


rule aggregate:
    input:
        final_outputs(),
        expected=EXPECTED,
    output:
        "results/{study}/aggregate.json",
    params:
        run_dirs=[run.path for run in RUNS],
        db=DATABASE,
        study=STUDY,
        tasks={name: config["tasks"][name] for name in RUN_TASKS},
        test_sets={
            name: f"results/{STUDY}/corpora/{name}/test.jsonl"
            for name in RUN_TASKS
            if config["tasks"][name]["kind"] == "translation"
        },
        code=fingerprint("peftlab/results"),
    log:
        "logs/{study}/aggregate.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/aggregate.py"
