"""Translation with decoder-only LMs: prompted shards (loss on the target only), left-padded generation that
drops the prompt and stops at eos, the built tiny Llama/Qwen, and the prompt template's checks. Everything on
tiny random models and a vocabulary trained here (offline)."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from peftlab.bench import Variant, benchmark_generation, check_merge
from peftlab.data import build_shards, collate, load_split
from peftlab.data.shards import IGNORE_INDEX, encode_prompts
from peftlab.forgetting import representation_drift
from peftlab.languages import DEFAULT_PROMPT, LanguageError, check_prompt_template, fill_prompt, languages_of
from peftlab.models import DECODER_CLASSES, build_decoder, load_base, load_tokenizer, train_tokenizer
from peftlab.train import logits_and_labels, token_loss
from peftlab.translate import generated_text, prompt_batch, translate

torch.set_num_threads(1)
PAIRS = [("Open the file", "Datei öffnen"), ("Close the window", "Fenster schließen"),
         ("Save the file", "Datei speichern"), ("Open the window", "Fenster öffnen")]
TASK = {"kind": "translation", "source_lang": "en", "target_lang": "de"}
BUILT = {"source": "build", "build": {"architecture": "llama"}}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    texts = [t for pair in PAIRS for t in pair] * 20 + [DEFAULT_PROMPT] * 5
    train_tokenizer(texts, folder, vocab_size=120, languages=["en", "de"])
    return load_tokenizer(str(folder))


@pytest.fixture(scope="module")
def languages():
    return languages_of(BUILT, TASK, decoder_only=True)


def llama(tokenizer, architecture: str = "llama", seed: int = 0) -> torch.nn.Module:
    return build_decoder(tokenizer, architecture, d_model=32, layers=2, heads=2, ffn_dim=64, seed=seed).eval()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for split in ("train", "dev", "test"):
        lines = [json.dumps({"id": f"{split}{i}", "src": s, "tgt": t}, ensure_ascii=False) for i, (s, t) in
                 enumerate(PAIRS)]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps({"sha256": "hand-made"}))
    return folder


def test_the_default_prompt_names_the_direction(languages):
    assert fill_prompt(languages, "Open the file") == "Translate English to German:\nOpen the file\n"
    custom = languages_of({**BUILT, "prompt_template": "{{{source_lang}}} {source} -> {target_name}:"}, TASK,
                          decoder_only=True)
    assert fill_prompt(custom, "a {b}") == "{en} a {b} -> German:"  # literal braces and a source's braces kept


@pytest.mark.parametrize(("template", "message"), [
    ("Translate {src}: {source}", "placeholder {src}"),
    ("Translate {target_name}:", "no {source}"),
    ("{} {source}", "placeholder {}"),
    ("{source!r}", "no conversion"),
    ("{source", "literal brace"),
])
def test_a_bad_prompt_template_is_refused(template, message):
    with pytest.raises(LanguageError, match=message.replace("{", r"\{").replace("}", r"\}")):
        check_prompt_template(template)


def test_prompt_template_and_encoder_decoder_models_exclude_each_other():
    with pytest.raises(LanguageError, match="for decoder-only models"):
        languages_of({"source": "build", "build": {}, "prompt_template": "{source}"}, TASK)
    with pytest.raises(LanguageError, match="not by source_prefix"):
        languages_of({**BUILT, "source_prefix": ">>de<< "}, TASK, decoder_only=True)
    with pytest.raises(LanguageError, match="not by languages: nllb"):
        languages_of({**BUILT, "languages": "nllb"}, TASK, decoder_only=True)
    with pytest.raises(LanguageError, match="English name of 'xx'"):
        languages_of(BUILT, {**TASK, "target_lang": "xx"}, decoder_only=True)


def test_causal_shards_are_prompt_target_eos_with_the_prompt_masked(tokenizer, languages, corpus, tmp_path):
    manifest = build_shards(corpus, tokenizer, tmp_path, tokenizer_id="t", languages=languages, decoder_only=True)
    assert manifest["causal"] is True
    row = load_split(tmp_path, "train")[0]
    prompt = tokenizer("Translate English to German:\nOpen the file\n", add_special_tokens=False)["input_ids"]
    target = tokenizer("Datei öffnen", add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == [*prompt, *target, tokenizer.eos_token_id]
    assert row["labels"] == [IGNORE_INDEX] * len(prompt) + [*target, tokenizer.eos_token_id]
    assert tokenizer.decode(row["input_ids"][len(prompt):], skip_special_tokens=True) == "Datei öffnen"
    stats = manifest["splits"]["train"]
    rows = load_split(tmp_path, "train")
    assert stats["tgt_tokens"] == sum(sum(t != IGNORE_INDEX for t in r["labels"]) for r in rows)
    cut = build_shards(corpus, tokenizer, tmp_path / "cut", tokenizer_id="t", languages=languages, decoder_only=True,
                       max_length=len(prompt) + 1)
    assert cut["splits"]["train"]["truncated"] == 4
    assert all(len(r["input_ids"]) == len(r["labels"]) <= len(prompt) + 1 for r in load_split(tmp_path / "cut", "dev"))


def test_a_tokenizer_with_bos_starts_every_prompt_with_it(tokenizer):
    with_bos = copy.deepcopy(tokenizer)
    with_bos.add_special_tokens({"bos_token": "<s>"})
    assert encode_prompts(with_bos, ["Open"])[0] == [with_bos.bos_token_id, *tokenizer("Open", add_special_tokens=False)
                                                     ["input_ids"]]
    assert encode_prompts(tokenizer, ["Open"])[0] == tokenizer("Open", add_special_tokens=False)["input_ids"]


def test_the_loss_is_the_mean_cross_entropy_over_target_tokens(tokenizer, languages, corpus, tmp_path):
    build_shards(corpus, tokenizer, tmp_path, tokenizer_id="t", languages=languages, decoder_only=True)
    rows = load_split(tmp_path, "train")[:3]
    model = llama(tokenizer)
    batch = collate(rows, tokenizer.pad_token_id)  # right-padded, labels -100 on prompt and padding
    with torch.no_grad():
        logits, labels = logits_and_labels(model, batch)
        loss = token_loss(logits, labels)
    # by hand: each row alone (no padding), each target token predicted from the logits one position before it
    terms = []
    for row in rows:
        with torch.no_grad():
            row_logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
        for t, label in enumerate(row["labels"]):
            if label != IGNORE_INDEX:
                terms.append(-F.log_softmax(row_logits[t - 1], dim=-1)[label])
    n_target = sum(sum(t != IGNORE_INDEX for t in r["labels"]) for r in rows)
    assert len(terms) == n_target == int((labels != IGNORE_INDEX).sum())
    assert float(loss) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)


@pytest.mark.parametrize("tuner", ["none", "prompt_tuning"])
def test_the_loss_is_transformers_own_causal_lm_loss(tokenizer, languages, corpus, tmp_path, tuner):
    """The reference is the model's own loss given the labels (transformers shifts them; peft's prompt tuning
    prepends virtual tokens, their logits, and -100 labels for them)."""
    from peft import PromptTuningConfig, TaskType

    build_shards(corpus, tokenizer, tmp_path, tokenizer_id="t", languages=languages, decoder_only=True)
    model = llama(tokenizer)
    if tuner == "prompt_tuning":
        model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=3))
    batch = collate(load_split(tmp_path, "train"), tokenizer.pad_token_id)
    with torch.no_grad():
        ours = token_loss(*logits_and_labels(model, batch))
        assert float(ours) == pytest.approx(float(model(**batch).loss), rel=1e-5)


def test_generated_text_drops_the_prompt_and_stops_at_eos(tokenizer):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    datei = tokenizer("Datei", add_special_tokens=False)["input_ids"]
    fenster = tokenizer("Fenster öffnen", add_special_tokens=False)["input_ids"]
    prompt = tokenizer("Open", add_special_tokens=False)["input_ids"]
    width = len(prompt) + 1  # one pad on the left, then the prompt
    out = torch.tensor([[pad, *prompt, *datei, eos, *fenster]])  # what follows eos is not the translation
    assert generated_text(tokenizer, out, width) == ["Datei"]
    assert generated_text(tokenizer, torch.tensor([[*prompt, pad, *fenster]]), len(prompt)) == ["Fenster öffnen"]


def test_translate_returns_the_greedy_continuation_up_to_eos(tokenizer, languages):
    """A random tiny Llama, greedy: the hypothesis is what a hand-written greedy loop generates after the prompt,
    cut where the model emits the token generation treats as eos (the first new token it did not emit before)."""
    model = llama(tokenizer, seed=3)
    source = "Open the file"
    prompt = encode_prompts(tokenizer, [fill_prompt(languages, source)])[0]
    ids, generated = list(prompt), []
    with torch.no_grad():
        for _ in range(8):
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            generated.append(nxt)
            ids.append(nxt)
    stop = next(i for i, t in enumerate(generated) if i > 0 and t not in generated[:i])
    eos_tokenizer = copy.deepcopy(tokenizer)
    eos_tokenizer.eos_token = eos_tokenizer.convert_ids_to_tokens(generated[stop])
    # beside a longer source, so the prompt batch is padded on the left
    hyps = translate(model, eos_tokenizer, [source, "Close the window and save the file"], languages=languages,
                     num_beams=1, max_new_tokens=8)
    assert hyps[0] == tokenizer.decode(generated[:stop], skip_special_tokens=True).strip().split("\n")[0].strip()
    assert "Translate" not in hyps[0] and "Open the file" not in hyps[0]


def test_left_padding_leaves_a_prompts_continuation_unchanged(tokenizer, languages):
    model = llama(tokenizer, seed=1)
    sources = ["Open", "Close the window and save the file"]
    batch = prompt_batch(tokenizer, languages, sources)
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1  # padded on the left
    alone = translate(model, tokenizer, sources[:1], languages=languages, num_beams=1, max_new_tokens=6)
    together = translate(model, tokenizer, sources, languages=languages, num_beams=1, max_new_tokens=6)
    assert together[0] == alone[0]


@pytest.mark.parametrize("architecture", sorted(DECODER_CLASSES))
def test_a_built_decoder_loads_back_as_a_causal_lm_for_translation(tokenizer, architecture, tmp_path):
    model = llama(tokenizer, architecture)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_base(str(tmp_path), {"source": "local", "path": str(tmp_path)}, TASK)
    assert type(loaded) is DECODER_CLASSES[architecture][1] and tok.pad_token_id == loaded.config.pad_token_id == 0
    classifier, _ = load_base(str(tmp_path), {"source": "local", "path": str(tmp_path)},
                              {"kind": "classification"}, num_labels=3)
    assert type(classifier).__name__.endswith("ForSequenceClassification")


def test_cka_of_a_decoder_only_model_reads_its_decoder(tokenizer, languages, corpus, tmp_path):
    build_shards(corpus, tokenizer, tmp_path, tokenizer_id="t", languages=languages, decoder_only=True)
    rows = load_split(tmp_path, "test")
    base = llama(tokenizer)
    same = representation_drift(base, copy.deepcopy(base), rows, pad_id=tokenizer.pad_token_id)
    assert len(same) == 3 and all(r["value"] == pytest.approx(1.0, abs=1e-5) for r in same)  # embeddings + 2 layers
    other = representation_drift(base, llama(tokenizer, seed=5), rows, pad_id=tokenizer.pad_token_id)
    assert all(r["value"] < 0.99 for r in other[1:])


def test_benchmark_generation_and_merge_check_on_a_decoder_only_model(tokenizer, languages):
    base = llama(tokenizer)
    # peft's own LoRA (the method table's Llama entry is another module's), merged by peft
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a non-zero update, so a merge that dropped it would show
    merged = copy.deepcopy(lora).merge_and_unload()
    batch = prompt_batch(tokenizer, languages, ["Open the file", "Close"])
    generated = lora.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                              pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        assert check_merge(lora, merged, batch, decoder_ids=generated) < 1e-3
    rows = benchmark_generation([Variant(lora, merged=False, deployed=False), Variant(merged, True, True)], base,
                                tokenizer, ["Open the file"], batch_sizes=[2], repeats=2, warmup=0, new_tokens=3,
                                languages=languages)
    assert [(r["batch_size"], r["merged"]) for r in rows] == [(2, False), (2, True)]
    assert all(r["ratio_to_base"] > 0 for r in rows)


def test_a_decoder_only_classifiers_features_are_its_pooled_tokens():
    """Llama's `score` head scores every position and the model keeps the last non-pad one: the Mahalanobis
    features must be that token's state, so that the head applied to them gives the model's logits."""
    from peftlab.classify import predict
    from peftlab.methods.tiny import tiny_model

    model = tiny_model("llama", "classification").eval()
    rows = [{"input_ids": [5, 6, 7, 8], "label": 0}, {"input_ids": [9, 10], "label": 1}]  # padded on the right
    logits, features = predict(model, rows, pad_id=model.config.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(model.score(torch.tensor(features)), torch.tensor(logits), atol=1e-5)


def test_a_decoder_only_run_trains_and_reloads_translating_the_same(tokenizer, languages, corpus, tmp_path):
    """runs.train_run on a built Llama folder (IA3, merged on reload), then peftlab.load_run: the run hands back
    the prompt, and its translations are evaluation's (load_trained, unmerged)."""
    import peftlab
    from peftlab.models import load_trained
    from peftlab.runs import train_run

    folder = tmp_path / "model"
    llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    spec = {"source": "local", "path": str(folder)}
    task = {**TASK, "corpus": {"source": "local", "path": "unused"}}
    build_shards(corpus, tokenizer, tmp_path / "shards", tokenizer_id="t", languages=languages_of(
        spec, task, decoder_only=True), decoder_only=True)
    run = {"run_id": "t/en-de/ia3/none/seed0", "study": "t", "task": "en-de", "method": "ia3", "method_name": "ia3",
           "budget": "none", "seed": 0, "options": {}, "base_model": "tiny", "data_manifest_sha256": None,
           "code_fingerprint": "test",
           "train": {"lr": 0.05, "batch_size": 4, "max_steps": 4, "warmup_steps": 1, "eval_interval": 2}}
    record = train_run(run, model_path=str(folder), model_spec=spec, task=task, shard_dirs=[tmp_path / "shards"],
                       method_dir=tmp_path / "run/method", record_path=tmp_path / "run/train.json",
                       checkpoint_dir=tmp_path / "ckpt")
    assert record["status"] == "ok" and record["train"]["steps"] == 4 and record["params"]["trainable"] > 0
    loaded = peftlab.load_run(tmp_path / "run")
    assert loaded.merged and loaded.languages.prompt == languages.prompt
    evaluated, tok = load_trained(str(folder), spec, task, tmp_path / "run/method", record["method_sha256"])
    sources = [s for s, _ in PAIRS]
    assert translate(loaded.model, loaded.tokenizer, sources, languages=loaded.languages, num_beams=2,
                     max_new_tokens=6) == translate(evaluated, tok, sources, languages=languages, num_beams=2,
                                                    max_new_tokens=6)


def test_a_byte_level_hypothesis_is_its_first_line():
    """Qwen's kind of tokenizer (byte-level BPE, no BOS) keeps line breaks: a base model that goes on past its
    translation (a new line, another prompt) is cut to the first line; the prompt's line breaks survive."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator([t for pair in PAIRS for t in pair] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    prompt = encode_prompts(tok, ["Translate English to German:\nOpen\n"])[0]
    assert tok.decode(prompt) == "Translate English to German:\nOpen\n"  # no BOS, line breaks kept
    continuation = tok("Datei öffnen\nTranslate English to German:", add_special_tokens=False)["input_ids"]
    assert generated_text(tok, torch.tensor([[*prompt, *continuation]]), len(prompt)) == ["Datei öffnen"]


def test_a_decoder_only_builds_monolingual_rows_from_its_targets(tokenizer, languages, corpus, tmp_path):
    """denoise_tasks of a decoder-only build: language modelling on the target and its eos, every token a label."""
    from peftlab.runs import monolingual_rows

    build_shards(corpus, tokenizer, tmp_path, tokenizer_id="t", languages=languages, decoder_only=True)
    (row,) = monolingual_rows(load_split(tmp_path, "train")[:1])
    target = [*tokenizer("Datei öffnen", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert row["input_ids"] == row["labels"] == target and row["id"] == "lm-train0"


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gemma"])
def test_every_decoder_family_trains_on_the_target_and_translates_the_prompt(tokenizer, languages, corpus, tmp_path,
                                                                              family):
    """The tiny random model of each decoder-only family (methods/tiny.py) on the prompted shards: the loss is
    transformers' own causal-LM loss, and translate's hypotheses are generate()'s tokens after the prompt, padded
    or not."""
    from peftlab.methods.tiny import tiny_model

    build_shards(corpus, tokenizer, tmp_path, tokenizer_id="t", languages=languages, decoder_only=True)
    model = tiny_model(family, "causal_lm", vocab=len(tokenizer), seed=2).eval()
    batch = collate(load_split(tmp_path, "train"), tokenizer.pad_token_id)
    sources = [s for s, _ in PAIRS]
    with torch.no_grad():
        assert float(token_loss(*logits_and_labels(model, batch))) == pytest.approx(float(model(**batch).loss),
                                                                                   rel=1e-5)
        prompts = prompt_batch(tokenizer, languages, sources)
        out = model.generate(**prompts, max_new_tokens=5, do_sample=False, num_beams=1,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    # each source alone (no padding) gives what the left-padded batch gave
    assert [translate(model, tokenizer, [s], languages=languages, num_beams=1, max_new_tokens=5)[0]
            for s in sources] == generated_text(tokenizer, out, prompts["input_ids"].shape[1])
