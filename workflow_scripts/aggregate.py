from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.atomic import write_json  # noqa: E402
from peftlab.results import aggregate, load_expectations, load_study_tasks, paired_significance  # noqa: E402

sm = snakemake  # noqa: F821
counts = aggregate([Path(d) for d in sm.params.run_dirs], Path(sm.params.db), study=sm.params.study)
load_study_tasks(sm.params.db, sm.params.study, sm.params.tasks)
tests = paired_significance(sm.params.db, sm.params.study, {t: Path(p) for t, p in sm.params.test_sets.items()})
claims = load_expectations(sm.params.db, sm.params.study, sm.input.expected[0] if sm.input.expected else None)
summary = {"db": sm.params.db, "runs": len(sm.params.run_dirs), **counts, "mt_significance": tests,
           "paper_claims": claims}
write_json(summary, Path(sm.output[0]))
