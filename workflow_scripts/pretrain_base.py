import json
from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.atomic import write_json  # noqa: E402
from peftlab.provenance import folder_manifest  # noqa: E402
from peftlab.runs import pretrain_base  # noqa: E402
from peftlab.status import failure_recorded, record_skipped, upstream_failure  # noqa: E402

sm = snakemake  # noqa: F821
record = Path(sm.output.model) / "pretrain.json"  # a failed or skipped build leaves only this record in the folder
identity = {"stage": "pretrain_base", "model": sm.wildcards.model}
upstream = {sm.input.tokenizer: "build_tokenizer", **{s: "build_shards" for s in [*sm.input.shards, *sm.input.denoise]}}
if reason := upstream_failure(upstream):
    record_skipped(record, identity, reason)
else:
    with failure_recorded(record, identity, Path(sm.log[0]), checkpoint_dir=Path(sm.params.checkpoints)):
        pretrain_base(sm.params.build, Path(sm.input.tokenizer).parent, [Path(s).parent for s in sm.input.shards],
                      Path(sm.output.model), checkpoint_dir=Path(sm.params.checkpoints),
                      denoise_dirs=[Path(s).parent for s in sm.input.denoise], log_path=Path(sm.log[0] + ".jsonl"))
# What downstream jobs depend on: the model by content (see base_model_input in rules/common.smk), or the
# failure record when there is no model.
outcome = json.loads(record.read_text())
if "status" in outcome:
    write_json(outcome, Path(sm.output.manifest))
else:
    write_json({"model": sm.output.model, "files": folder_manifest(Path(sm.output.model))}, Path(sm.output.manifest))
