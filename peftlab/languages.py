"""How each model family is told the translation direction, as plain data: planning checks a study's language
codes without importing transformers, and the shard, training and evaluation jobs read the same table.

- marian (the pipeline's built model, multilingual opus-mt): a ">>xx<<" tag before the source text;
- t5 (T5, mT5, byT5, Flan-T5): a text prefix, "translate English to German: ";
- mbart50, nllb, m2m100: a language-code token. The tokenizer puts the source code before the source and the
  target code before the target (src_lang / tgt_lang: labels start with it), and generation forces the target
  code as the first token after the decoder start (forced_bos_token_id). Each family has its own codes
  (de_DE, deu_Latn, de), listed below as transformers 5.23 lists them (FAIRSEQ_LANGUAGE_CODES; a test compares).

Decoder-only models (Llama, Qwen, Gemma, Mistral; a built `architecture: llama`) translate a prompt instead: the
base model's `prompt_template` (default DEFAULT_PROMPT) with the source sentence and the direction filled in; the
model continues it with the translation and its end-of-sequence token (peftlab.data.shards: encode_prompts,
_tokenize_causal).

A study names languages by ISO 639-1 code (tasks.<t>.source_lang / target_lang, also the corpus fields and
sacrebleu's target language); the tables map them to the family's code. A base model's `language_codes` entry
adds or overrides a mapping (zh: zho_Hant).
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class LanguageError(ValueError):
    """A language a model family has no code for, or a tokenizer that does not fit its family."""


MBART50_CODES = (
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN", "it_IT", "ja_XX",
    "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO", "ru_RU", "si_LK", "tr_TR", "vi_VN",
    "zh_CN", "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE", "km_KH", "mk_MK", "ml_IN",
    "mn_MN", "mr_IN", "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN", "te_IN", "th_TH", "tl_XX", "uk_UA",
    "ur_PK", "xh_ZA", "gl_ES", "sl_SI",
)

NLLB_CODES = (
    "ace_Arab", "ace_Latn", "acm_Arab", "acq_Arab", "aeb_Arab", "afr_Latn", "ajp_Arab", "aka_Latn", "amh_Ethi",
    "apc_Arab", "arb_Arab", "ars_Arab", "ary_Arab", "arz_Arab", "asm_Beng", "ast_Latn", "awa_Deva", "ayr_Latn",
    "azb_Arab", "azj_Latn", "bak_Cyrl", "bam_Latn", "ban_Latn", "bel_Cyrl", "bem_Latn", "ben_Beng", "bho_Deva",
    "bjn_Arab", "bjn_Latn", "bod_Tibt", "bos_Latn", "bug_Latn", "bul_Cyrl", "cat_Latn", "ceb_Latn", "ces_Latn",
    "cjk_Latn", "ckb_Arab", "crh_Latn", "cym_Latn", "dan_Latn", "deu_Latn", "dik_Latn", "dyu_Latn", "dzo_Tibt",
    "ell_Grek", "eng_Latn", "epo_Latn", "est_Latn", "eus_Latn", "ewe_Latn", "fao_Latn", "pes_Arab", "fij_Latn",
    "fin_Latn", "fon_Latn", "fra_Latn", "fur_Latn", "fuv_Latn", "gla_Latn", "gle_Latn", "glg_Latn", "grn_Latn",
    "guj_Gujr", "hat_Latn", "hau_Latn", "heb_Hebr", "hin_Deva", "hne_Deva", "hrv_Latn", "hun_Latn", "hye_Armn",
    "ibo_Latn", "ilo_Latn", "ind_Latn", "isl_Latn", "ita_Latn", "jav_Latn", "jpn_Jpan", "kab_Latn", "kac_Latn",
    "kam_Latn", "kan_Knda", "kas_Arab", "kas_Deva", "kat_Geor", "knc_Arab", "knc_Latn", "kaz_Cyrl", "kbp_Latn",
    "kea_Latn", "khm_Khmr", "kik_Latn", "kin_Latn", "kir_Cyrl", "kmb_Latn", "kon_Latn", "kor_Hang", "kmr_Latn",
    "lao_Laoo", "lvs_Latn", "lij_Latn", "lim_Latn", "lin_Latn", "lit_Latn", "lmo_Latn", "ltg_Latn", "ltz_Latn",
    "lua_Latn", "lug_Latn", "luo_Latn", "lus_Latn", "mag_Deva", "mai_Deva", "mal_Mlym", "mar_Deva", "min_Latn",
    "mkd_Cyrl", "plt_Latn", "mlt_Latn", "mni_Beng", "khk_Cyrl", "mos_Latn", "mri_Latn", "zsm_Latn", "mya_Mymr",
    "nld_Latn", "nno_Latn", "nob_Latn", "npi_Deva", "nso_Latn", "nus_Latn", "nya_Latn", "oci_Latn", "gaz_Latn",
    "ory_Orya", "pag_Latn", "pan_Guru", "pap_Latn", "pol_Latn", "por_Latn", "prs_Arab", "pbt_Arab", "quy_Latn",
    "ron_Latn", "run_Latn", "rus_Cyrl", "sag_Latn", "san_Deva", "sat_Beng", "scn_Latn", "shn_Mymr", "sin_Sinh",
    "slk_Latn", "slv_Latn", "smo_Latn", "sna_Latn", "snd_Arab", "som_Latn", "sot_Latn", "spa_Latn", "als_Latn",
    "srd_Latn", "srp_Cyrl", "ssw_Latn", "sun_Latn", "swe_Latn", "swh_Latn", "szl_Latn", "tam_Taml", "tat_Cyrl",
    "tel_Telu", "tgk_Cyrl", "tgl_Latn", "tha_Thai", "tir_Ethi", "taq_Latn", "taq_Tfng", "tpi_Latn", "tsn_Latn",
    "tso_Latn", "tuk_Latn", "tum_Latn", "tur_Latn", "twi_Latn", "tzm_Tfng", "uig_Arab", "ukr_Cyrl", "umb_Latn",
    "urd_Arab", "uzn_Latn", "vec_Latn", "vie_Latn", "war_Latn", "wol_Latn", "xho_Latn", "ydd_Hebr", "yor_Latn",
    "yue_Hant", "zho_Hans", "zho_Hant", "zul_Latn",
)

M2M100_CODES = (
    "af", "am", "ar", "ast", "az", "ba", "be", "bg", "bn", "br", "bs", "ca", "ceb", "cs", "cy", "da", "de", "el",
    "en", "es", "et", "fa", "ff", "fi", "fr", "fy", "ga", "gd", "gl", "gu", "ha", "he", "hi", "hr", "ht", "hu", "hy",
    "id", "ig", "ilo", "is", "it", "ja", "jv", "ka", "kk", "km", "kn", "ko", "lb", "lg", "ln", "lo", "lt", "lv", "mg",
    "mk", "ml", "mn", "mr", "ms", "my", "ne", "nl", "no", "ns", "oc", "or", "pa", "pl", "ps", "pt", "ro", "ru", "sd",
    "si", "sk", "sl", "so", "sq", "sr", "ss", "su", "sv", "sw", "ta", "th", "tl", "tn", "tr", "uk", "ur", "uz", "vi",
    "wo", "xh", "yi", "yo", "zh", "zu",
)

NLLB_BY_ISO = {
    "af": "afr_Latn", "ak": "aka_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "as": "asm_Beng", "az": "azj_Latn",
    "ba": "bak_Cyrl", "be": "bel_Cyrl", "bg": "bul_Cyrl", "bm": "bam_Latn", "bn": "ben_Beng", "bo": "bod_Tibt",
    "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn",
    "dz": "dzo_Tibt", "ee": "ewe_Latn", "el": "ell_Grek", "en": "eng_Latn", "eo": "epo_Latn", "es": "spa_Latn",
    "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab", "ff": "fuv_Latn", "fi": "fin_Latn", "fj": "fij_Latn",
    "fo": "fao_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "gd": "gla_Latn", "gl": "glg_Latn", "gn": "grn_Latn",
    "gu": "guj_Gujr", "ha": "hau_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "ht": "hat_Latn",
    "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn", "ig": "ibo_Latn", "is": "isl_Latn", "it": "ita_Latn",
    "ja": "jpn_Jpan", "jv": "jav_Latn", "ka": "kat_Geor", "kg": "kon_Latn", "ki": "kik_Latn", "kk": "kaz_Cyrl",
    "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang", "ks": "kas_Arab", "ku": "kmr_Latn", "ky": "kir_Cyrl",
    "lb": "ltz_Latn", "lg": "lug_Latn", "li": "lim_Latn", "ln": "lin_Latn", "lo": "lao_Laoo", "lt": "lit_Latn",
    "lv": "lvs_Latn", "mg": "plt_Latn", "mi": "mri_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl",
    "mr": "mar_Deva", "ms": "zsm_Latn", "mt": "mlt_Latn", "my": "mya_Mymr", "nb": "nob_Latn", "ne": "npi_Deva",
    "nl": "nld_Latn", "nn": "nno_Latn", "no": "nob_Latn", "ny": "nya_Latn", "oc": "oci_Latn", "om": "gaz_Latn",
    "or": "ory_Orya", "pa": "pan_Guru", "pl": "pol_Latn", "ps": "pbt_Arab", "pt": "por_Latn", "qu": "quy_Latn",
    "rn": "run_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "rw": "kin_Latn", "sa": "san_Deva", "sc": "srd_Latn",
    "sd": "snd_Arab", "sg": "sag_Latn", "si": "sin_Sinh", "sk": "slk_Latn", "sl": "slv_Latn", "sm": "smo_Latn",
    "sn": "sna_Latn", "so": "som_Latn", "sq": "als_Latn", "sr": "srp_Cyrl", "ss": "ssw_Latn", "st": "sot_Latn",
    "su": "sun_Latn", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu", "tg": "tgk_Cyrl",
    "th": "tha_Thai", "ti": "tir_Ethi", "tk": "tuk_Latn", "tl": "tgl_Latn", "tn": "tsn_Latn", "tr": "tur_Latn",
    "ts": "tso_Latn", "tt": "tat_Cyrl", "tw": "twi_Latn", "ug": "uig_Arab", "uk": "ukr_Cyrl", "ur": "urd_Arab",
    "uz": "uzn_Latn", "vi": "vie_Latn", "wo": "wol_Latn", "xh": "xho_Latn", "yi": "ydd_Hebr", "yo": "yor_Latn",
    "zh": "zho_Hans", "zu": "zul_Latn",
}

ENGLISH_NAMES = {
    "af": "Afrikaans", "ak": "Akan", "am": "Amharic", "ar": "Arabic", "as": "Assamese", "az": "Azerbaijani",
    "ba": "Bashkir", "be": "Belarusian", "bg": "Bulgarian", "bm": "Bambara", "bn": "Bengali", "bo": "Tibetan",
    "br": "Breton", "bs": "Bosnian", "ca": "Catalan", "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German",
    "dz": "Dzongkha", "ee": "Ewe", "el": "Greek", "en": "English", "eo": "Esperanto", "es": "Spanish",
    "et": "Estonian", "eu": "Basque", "fa": "Persian", "ff": "Fulah", "fi": "Finnish", "fj": "Fijian",
    "fo": "Faroese", "fr": "French", "fy": "Western Frisian", "ga": "Irish", "gd": "Scottish Gaelic",
    "gl": "Galician", "gn": "Guarani", "gu": "Gujarati", "ha": "Hausa", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian", "hy": "Armenian", "id": "Indonesian", "ig": "Igbo",
    "is": "Icelandic", "it": "Italian", "ja": "Japanese", "jv": "Javanese", "ka": "Georgian", "kg": "Kongo",
    "ki": "Kikuyu", "kk": "Kazakh", "km": "Khmer", "kn": "Kannada", "ko": "Korean", "ks": "Kashmiri", "ku": "Kurdish",
    "ky": "Kyrgyz", "lb": "Luxembourgish", "lg": "Ganda", "li": "Limburgan", "ln": "Lingala", "lo": "Lao",
    "lt": "Lithuanian", "lv": "Latvian", "mg": "Malagasy", "mi": "Maori", "mk": "Macedonian", "ml": "Malayalam",
    "mn": "Mongolian", "mr": "Marathi", "ms": "Malay", "mt": "Maltese", "my": "Burmese", "nb": "Norwegian Bokmål",
    "ne": "Nepali", "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian", "ny": "Chichewa", "oc": "Occitan",
    "om": "Oromo", "or": "Oriya", "pa": "Punjabi", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese",
    "qu": "Quechua", "rn": "Rundi", "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda", "sa": "Sanskrit",
    "sc": "Sardinian", "sd": "Sindhi", "sg": "Sango", "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian",
    "sm": "Samoan", "sn": "Shona", "so": "Somali", "sq": "Albanian", "sr": "Serbian", "ss": "Swati",
    "st": "Southern Sotho", "su": "Sundanese", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu",
    "tg": "Tajik", "th": "Thai", "ti": "Tigrinya", "tk": "Turkmen", "tl": "Tagalog", "tn": "Tswana", "tr": "Turkish",
    "ts": "Tsonga", "tt": "Tatar", "tw": "Twi", "ug": "Uighur", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek",
    "vi": "Vietnamese", "wo": "Wolof", "xh": "Xhosa", "yi": "Yiddish", "yo": "Yoruba", "zh": "Chinese", "zu": "Zulu",
}

# NLLB also takes an ISO 639-3 code that names a single NLLB language (ast, ceb, ilo, as OPUS spells them).
_NLLB_PREFIXES = [c.split("_")[0] for c in NLLB_CODES]
_NLLB_BY_ISO3 = {p: c for p, c in zip(_NLLB_PREFIXES, NLLB_CODES, strict=True) if _NLLB_PREFIXES.count(p) == 1}


@dataclass(frozen=True)
class Family:
    prefix: str = ""  # text before each source sentence; {source_lang} {target_lang} {source_name} {target_name}
    codes: Mapping[str, str] | None = None  # the study's code -> the family's language code; None: no codes
    valid: tuple[str, ...] = ()  # every code the family's tokenizer knows
    token: str = "{code}"  # the vocabulary token of a code
    tokenizers: tuple[str, ...] = ()  # the family's tokenizer classes (transformers 5 names, with their aliases)


FAMILIES: dict[str, Family] = {
    "none": Family(),
    "marian": Family(prefix=">>{target_lang}<< "),
    "t5": Family(prefix="translate {source_name} to {target_name}: ", tokenizers=("T5Tokenizer", "T5TokenizerFast")),
    "mbart50": Family(codes={c.split("_")[0]: c for c in MBART50_CODES}, valid=MBART50_CODES,
                      tokenizers=("MBart50Tokenizer", "MBart50TokenizerFast")),
    "nllb": Family(codes={**_NLLB_BY_ISO3, **NLLB_BY_ISO}, valid=NLLB_CODES,
                   tokenizers=("NllbTokenizer", "NllbTokenizerFast")),
    "m2m100": Family(codes={c: c for c in M2M100_CODES}, valid=M2M100_CODES, token="__{code}__",
                     tokenizers=("M2M100Tokenizer",)),
}


@dataclass(frozen=True)
class Languages:
    """One task's direction as its base model expects it."""

    source_lang: str = ""  # the study's codes
    target_lang: str = ""
    family: str = "none"
    prefix: str = ""  # text put before every source sentence
    src_code: str | None = None  # the tokenizer's src_lang / tgt_lang (code families only)
    tgt_code: str | None = None
    target_token: str | None = None  # the token generation starts with, after the decoder start
    prompt: str = ""  # decoder-only models: the prompt with the direction filled in and "{source}" left to fill

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


NO_LANGUAGES = Languages()


# A decoder-only model's prompt: the fields below, filled per task ({source} per sentence). The model's answer
# (the target) follows the prompt directly, so the prompt ends where the translation starts (here, a new line).
DEFAULT_PROMPT = "Translate {source_name} to {target_name}:\n{source}\n"
PROMPT_FIELDS = ("source", "source_lang", "target_lang", "source_name", "target_name")


def check_prompt_template(template: str) -> None:
    """LanguageError for a prompt template that cannot be filled: an unknown or positional placeholder, a
    conversion or format spec, unbalanced braces, or no {source} (the model would never see the sentence)."""
    try:
        fields = [(name, conv, spec) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise LanguageError(f"prompt_template {template!r}: {err} (write a literal brace as {{{{ or }}}})") from None
    for name, conv, spec in fields:
        if name not in PROMPT_FIELDS:
            raise LanguageError(f"prompt_template {template!r} has the placeholder {{{name}}}; known: "
                                f"{', '.join('{' + f + '}' for f in PROMPT_FIELDS)}")
        if conv or spec:
            raise LanguageError(f"prompt_template {template!r}: {{{name}}} takes no conversion or format spec")
    if "source" not in [name for name, _, _ in fields]:
        raise LanguageError(f"prompt_template {template!r} has no {{source}}: the model would never see the sentence")


def built_architecture(spec: dict) -> str:
    """What a built base model is (build.architecture): marian, or a decoder-only family."""
    return spec.get("build", {}).get("architecture", "marian")


def model_family(spec: dict) -> str:
    """The family of a base-model spec: its `languages` entry, else its tokenizer's class (local and package
    models), else its hub id; a built model is a Marian, or prompted (none) when it is decoder-only."""
    if "languages" in spec:
        if spec["languages"] not in FAMILIES:
            raise LanguageError(f"languages {spec['languages']!r} is not a known family ({', '.join(FAMILIES)})")
        return spec["languages"]
    if spec["source"] == "build":
        return "marian" if built_architecture(spec) == "marian" else "none"
    if spec["source"] in ("local", "package"):
        return _family_of_folder(spec)
    if spec["source"] == "hub":
        name = spec["id"].split("/")[-1].lower()
        if "mbart-large-50" in name or "mbart50" in name:
            return "mbart50"
        if name.startswith("nllb"):
            return "nllb"
        if name.startswith("m2m100"):
            return "m2m100"
        if name.startswith(("t5", "mt5", "byt5", "umt5", "flan-t5")):
            return "t5"
    return "none"


def _family_of_folder(spec: dict) -> str:
    from peftlab.model_source import ModelError, resolve_model_path

    try:
        config = Path(resolve_model_path(spec)) / "tokenizer_config.json"
    except ModelError:
        return "none"  # the config check names the missing model itself
    cls = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
    return next((name for name, fam in FAMILIES.items() if cls in fam.tokenizers), "none")


def _direction(template: str, what: str, key: str, src: str, tgt: str) -> dict[str, str]:
    """The direction's fields of a prefix or prompt template; LanguageError for a name peftlab does not know."""
    names = {"source_name": ENGLISH_NAMES.get(src), "target_name": ENGLISH_NAMES.get(tgt)}
    for field, name in names.items():
        if "{" + field + "}" in template and name is None:
            lang = src if field == "source_name" else tgt
            raise LanguageError(f"the {what} {template!r} needs the English name of {lang!r}, which peftlab does "
                                f"not know: write it out in the base model's {key}")
    return {"source_lang": src, "target_lang": tgt, **names}


def _prompt(template: str, src: str, tgt: str) -> str:
    """The prompt template with the direction filled in and {source} kept, every other brace escaped, so that
    fill_prompt's format() reproduces the template's literal text exactly."""
    values = _direction(template, "prompt template", "prompt_template", src, tgt)

    def escape(text: str) -> str:
        return text.replace("{", "{{").replace("}", "}}")

    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(escape(literal))
        if name is not None:
            parts.append("{source}" if name == "source" else escape(values[name]))
    return "".join(parts)


def fill_prompt(languages: Languages, source: str) -> str:
    """A decoder-only model's input for one source sentence (the translation follows it)."""
    return languages.prompt.format(source=source)


def languages_of(spec: dict, task: dict, *, decoder_only: bool = False) -> Languages:
    """A translation task's Languages on a base model; LanguageError names a language the family has no code for.

    decoder_only: the model is a causal LM (no encoder), prompted with the spec's `prompt_template` (default
    DEFAULT_PROMPT); a `prompt_template` on an encoder-decoder model, or a source prefix or language codes on a
    decoder-only one, is an error (the key would be silently ignored)."""
    family_name = model_family(spec)
    family = FAMILIES[family_name]
    src, tgt = task.get("source_lang", ""), task.get("target_lang", "")
    if "prompt_template" in spec:
        check_prompt_template(spec["prompt_template"])
        if not decoder_only:
            raise LanguageError("prompt_template is for decoder-only models (a prompt they continue); this base "
                                "model is an encoder-decoder: use source_prefix")
    if decoder_only:
        told = [key for key in ("source_prefix", "language_codes") if key in spec]
        told += [f"languages: {family_name}"] if family_name != "none" and "languages" in spec else []
        if told:
            raise LanguageError(f"a decoder-only model is told the direction by its prompt_template, not by "
                                f"{' or '.join(told)}: set prompt_template instead")
        return Languages(src, tgt, family_name, prompt=_prompt(spec.get("prompt_template", DEFAULT_PROMPT), src, tgt))
    template = spec.get("source_prefix", family.prefix)
    prefix = template.format(**_direction(template, "source prefix", "source_prefix", src, tgt))
    overrides = spec.get("language_codes", {})
    if family.codes is None:
        if overrides:
            raise LanguageError(f"language_codes is set, but the model's family ({family_name}) uses no codes")
        return Languages(src, tgt, family_name, prefix)
    for lang, code in overrides.items():
        if code not in family.valid:
            raise LanguageError(f"language_codes maps {lang!r} to {code!r}, which is not a {family_name} code")
    codes = {**family.codes, **overrides}
    for lang in (src, tgt):
        if lang not in codes:
            raise LanguageError(f"{family_name} has no language code for {lang!r}; it knows {', '.join(sorted(codes))} "
                                f"(or map it in the base model's language_codes, e.g. {{{lang}: <code>}})")
    return Languages(src, tgt, family_name, prefix, codes[src], codes[tgt], family.token.format(code=codes[tgt]))


def configure_tokenizer(tokenizer: Any, languages: Languages) -> int | None:
    """Set the tokenizer's source and target codes; returns the id generation must start with (None: no codes).

    A tokenizer of a code family used without its codes is an error: it would tag both sides with its default
    source language (and an M2M100 tokenizer with no target language fails with KeyError: None)."""
    cls = type(tokenizer).__name__
    owner = next((name for name, fam in FAMILIES.items() if fam.codes is not None and cls in fam.tokenizers), None)
    family = FAMILIES[languages.family]
    if family.codes is None:
        if owner is not None:
            raise LanguageError(f"the base model's tokenizer is a {cls}, which needs {owner} language codes, but the "
                                f"model's family is {languages.family!r}: set `languages: {owner}` in its base_models "
                                "entry")
        return None
    if cls not in family.tokenizers:
        raise LanguageError(f"{languages.family} language codes need a {' or '.join(family.tokenizers)}; the base "
                            f"model's tokenizer is a {cls}")
    ids = {}
    for code in (languages.src_code, languages.tgt_code):
        token = family.token.format(code=code)
        ids[code] = tokenizer.convert_tokens_to_ids(token)
        if ids[code] is None or ids[code] == tokenizer.unk_token_id:
            raise LanguageError(f"the {cls} has no token {token!r} for language code {code!r}")
    tokenizer.src_lang = languages.src_code  # the setter re-templates the source side
    tokenizer.tgt_lang = languages.tgt_code
    return ids[languages.tgt_code]
