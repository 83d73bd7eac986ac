from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.data import build_shards  # noqa: E402
from peftlab.languages import NO_LANGUAGES, languages_of  # noqa: E402
from peftlab.model_source import resolve_model_path  # noqa: E402
from peftlab.models import load_tokenizer, spec_is_decoder_only  # noqa: E402
from peftlab.status import failure_recorded, record_skipped, upstream_failure  # noqa: E402

sm = snakemake  # noqa: F821
manifest = Path(sm.output[0])
identity = {"stage": "build_shards", "model": sm.wildcards.model, "task": sm.wildcards.task}
if reason := upstream_failure({sm.input.corpus: "prepare_corpus", **{t: "build_tokenizer" for t in sm.input.base}}):
    record_skipped(manifest, identity, reason)
else:
    with failure_recorded(manifest, identity, Path(sm.log[0])):
        spec, task = sm.params.model_spec, sm.params.task
        path = sm.params.built_tokenizer or resolve_model_path(spec)
        tokenizer = load_tokenizer(path, spec)
        causal = task["kind"] == "translation" and spec_is_decoder_only(spec, path)
        languages = languages_of(spec, task, decoder_only=causal) if task["kind"] == "translation" else NO_LANGUAGES
        build_shards(Path(sm.input.corpus).parent, tokenizer, manifest.parent, tokenizer_id=sm.wildcards.model,
                     languages=languages, max_length=task.get("max_length", 128), decoder_only=causal)
