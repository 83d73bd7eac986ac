import json
from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
import torch  # noqa: E402

# The job holds every core to keep other jobs off them (rules/benchmark.smk); it times with threads_per_job.
torch.set_num_threads(max(1, min(snakemake.threads, snakemake.params.torch_threads)))  # noqa: F821
from peftlab.bench import benchmark_run  # noqa: E402
from peftlab.model_source import resolve_model_path  # noqa: E402
from peftlab.status import failure_recorded, record_skipped, upstream_failure  # noqa: E402

sm = snakemake  # noqa: F821
train_record = json.loads(Path(sm.input.train).read_text())
run_id = train_record["run_id"]
if reason := upstream_failure({sm.input.train: "training"}):
    record_skipped(Path(sm.output.record), {"run_id": run_id}, reason)
else:
    with failure_recorded(Path(sm.output.record), {"run_id": run_id}, Path(sm.log[0])):
        benchmark_run(run_id, model_path=resolve_model_path(sm.params.model_spec, sm.params.built_dir),
                      model_spec=sm.params.model_spec, task=sm.params.task,
                      corpus_dir=Path(sm.input.corpus).parent, shard_dir=Path(sm.input.shards).parent,
                      method_dir=Path(sm.input.method_dir), method_sha256=train_record.get("method_sha256") or {},
                      record_path=Path(sm.output.record), settings=sm.params.settings)
