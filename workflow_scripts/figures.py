from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.results.report import write_study_report  # noqa: E402

sm = snakemake  # noqa: F821
write_study_report(Path(sm.params.db), sm.wildcards.study, Path(sm.params.out_dir))
