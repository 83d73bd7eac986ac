import json
from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.evaluate import evaluate_run  # noqa: E402

sm = snakemake  # noqa: F821
evaluate_run(json.loads(Path(sm.input.train).read_text())["run_id"], model_path=sm.params.model_path,
             model_spec=sm.params.model_spec, task=sm.params.task, corpus_dir=Path(sm.input.corpus).parent,
             method_dir=Path(sm.input.method_dir), record_path=Path(sm.output.record),
             hypotheses_path=Path(sm.output.hypotheses), settings=sm.params.settings)
