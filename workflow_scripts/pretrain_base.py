from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.atomic import write_json  # noqa: E402
from peftlab.provenance import folder_manifest  # noqa: E402
from peftlab.runs import pretrain_base  # noqa: E402

sm = snakemake  # noqa: F821
pretrain_base(sm.params.build, Path(sm.input.tokenizer).parent, [Path(s).parent for s in sm.input.shards],
              Path(sm.output.model), checkpoint_dir=Path(sm.params.checkpoints),
              denoise_dirs=[Path(s).parent for s in sm.input.denoise], log_path=Path(sm.log[0] + ".jsonl"))
# What downstream jobs depend on: the model by content (see base_model_input in rules/common.smk).
write_json({"model": sm.output.model, "files": folder_manifest(Path(sm.output.model))}, Path(sm.output.manifest))
