# peftlab: which parameter-efficient fine-tuning method, for this model, task and budget?
# The Snakefile is a table of contents: the stages live in rules/, their code in peftlab/.
from snakemake.utils import min_version

min_version("9.0")


# The demo is the default; a study given with --configfile replaces it rather than being merged into it.
if not config:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/base.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/benchmark.smk"
include: "rules/aggregate.smk"
include: "rules/report.smk"


report: "report/workflow.rst"


rule all:
    input:
        f"results/{STUDY}/aggregate.json",
        f"results/{STUDY}/report/summary.html",
