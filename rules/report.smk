# Tables and plots of a study, registered with Snakemake's report: `snakemake --report report.html`.


rule figures:
    input:
        "results/{study}/aggregate.json",
    output:
        plots=report(
            directory("results/{study}/report/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="{study}",
            subcategory="Plots",
        ),
        tables=report(
            directory("results/{study}/report/tables"),
            patterns=["{name}.csv"],
            caption="../report/tables.rst",
            category="{study}",
            subcategory="Tables",
        ),
    params:
        db="results/results.duckdb",
        code=fingerprint("peftlab/results"),
    log:
        "logs/{study}/figures.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/figures.py"
