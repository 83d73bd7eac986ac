import json
from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.runs import failure_recorded, train_run  # noqa: E402

sm = snakemake  # noqa: F821
shard_dir = Path(sm.input.shards).parent
manifest = json.loads((shard_dir / "manifest.json").read_text())
run = {**sm.params.run, "code_fingerprint": sm.params.code, "data_manifest_sha256": manifest["corpus_sha256"]}
Path(sm.output.method_dir).mkdir(parents=True, exist_ok=True)  # exists even when the run fails
with failure_recorded(Path(sm.output.record), {k: run[k] for k in ("run_id", "study", "task", "method", "budget",
                                                                   "seed", "code_fingerprint")}, Path(sm.log[0])):
    train_run(run, model_path=sm.params.model_path, model_spec=sm.params.model_spec, task=sm.params.task,
              shard_dir=shard_dir, method_dir=Path(sm.output.method_dir), record_path=Path(sm.output.record),
              checkpoint_dir=Path(sm.params.checkpoints), log_path=Path(sm.params.curve))
