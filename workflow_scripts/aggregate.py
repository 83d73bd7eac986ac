from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.atomic import write_json  # noqa: E402
from peftlab.results import aggregate, load_expectations  # noqa: E402

sm = snakemake  # noqa: F821
counts = aggregate([Path(d) for d in sm.params.run_dirs], Path(sm.params.db))
claims = load_expectations(sm.params.db, sm.params.study, sm.input.expected[0] if sm.input.expected else None)
write_json({"db": sm.params.db, "runs": len(sm.params.run_dirs), **counts, "paper_claims": claims},
           Path(sm.output[0]))
