import json
from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.model_source import resolve_model_path  # noqa: E402
from peftlab.runs import adopt_shared_training, train_run  # noqa: E402
from peftlab.status import failure_recorded, record_skipped, upstream_failure  # noqa: E402

sm = snakemake  # noqa: F821
run = {**sm.params.run, "code_fingerprint": sm.params.code}
Path(sm.output.method_dir).mkdir(parents=True, exist_ok=True)  # exists even when the run fails
identity = {k: run[k] for k in ("run_id", "study", "task", "method", "budget", "seed", "code_fingerprint")}
upstream = {**{s: "build_shards" for s in sm.input.shards}, **{s: "train_multitask" for s in sm.input.shared},
            **{b: "pretrain_base" for b in sm.input.base}}
checkpoints = Path(sm.params.checkpoints)
if reason := upstream_failure(upstream):
    record_skipped(Path(sm.output.record), identity, reason)
else:
    with failure_recorded(Path(sm.output.record), identity, Path(sm.log[0]), checkpoint_dir=checkpoints):
        if sm.input.shared:  # a multi-task method: this task adopts the model trained on all tasks
            adopt_shared_training(Path(sm.input.shared[0]), Path(sm.input.shared[0]).parent / "method", run,
                                  record_path=Path(sm.output.record), method_dir=Path(sm.output.method_dir),
                                  task=sm.params.task)
        else:
            shard_dirs = [Path(s).parent for s in sm.input.shards]
            manifests = [json.loads((d / "manifest.json").read_text())["corpus_sha256"] for d in shard_dirs]
            run["data_manifest_sha256"] = "+".join(manifests) or None
            model_path = resolve_model_path(sm.params.model_spec, sm.params.built_dir)  # not a param: see built_dir
            train_run(run, model_path=model_path, model_spec=sm.params.model_spec, task=sm.params.task,
                      shard_dirs=shard_dirs, method_dir=Path(sm.output.method_dir), record_path=Path(sm.output.record),
                      checkpoint_dir=checkpoints, log_path=Path(sm.params.curve))
