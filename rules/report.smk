# A study's report, registered with Snakemake's: `snakemake --report report.html --report-metadata
# report/metadata.yaml` (the metadata makes the report open on the workflow description, which links each
# study's summary, instead of the DAG). Per study: the summary first, then the plots by kind (one caption per
# kind, labelled by task), then the report views as HTML tables that display inline (views without rows left out).


rule figures:
    input:
        "results/{study}/aggregate.json",
    output:
        summary=report(
            "results/{study}/report/summary.html",
            caption="../report/summary.rst",
            category="{study}",
            subcategory="1. Summary",
            labels={"page": "summary of study {study}"},
        ),
        quality=report(
            directory("results/{study}/report/quality_vs_budget"),
            patterns=["{task}.png"],
            caption="../report/quality_vs_budget.rst",
            category="{study}",
            subcategory="2. Quality vs budget",
            labels={"plot": "quality vs trainable parameters", "task": "{task}"},
        ),
        pareto=report(
            directory("results/{study}/report/pareto"),
            patterns=["{task}.png"],
            caption="../report/pareto.rst",
            category="{study}",
            subcategory="3. Quality vs latency",
            labels={"plot": "Pareto front, quality vs latency", "task": "{task}"},
        ),
        tables=report(
            directory("results/{study}/report/tables"),
            patterns=["{view}.html"],
            caption="../report/tables.rst",
            category="{study}",
            subcategory="4. Tables",
            labels={"view": "{view}"},
        ),
    params:
        db="results/results.duckdb",
        out_dir="results/{study}/report",
        code=fingerprint("peftlab/results"),
    log:
        "logs/{study}/figures.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/figures.py"
