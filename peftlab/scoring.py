"""sacrebleu scores of translations, and the plan-time check that they can be computed: kept apart from
evaluate.py so that planning imports no torch."""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF, TER


class ScoringError(ValueError):
    """A target language whose BLEU tokenizer cannot be built here (a missing sacrebleu extra)."""


def bleu_metric(target_lang: str) -> BLEU:
    """BLEU with the tokenizer sacrebleu chooses for the target language (ja-mecab, ko-mecab, zh; else 13a)."""
    try:
        return BLEU(trg_lang=target_lang)
    except (ImportError, RuntimeError) as exc:  # sacrebleu raises RuntimeError when MeCab or its dictionary is missing
        tokenizer = BLEU._TOKENIZER_MAP.get(target_lang, BLEU.TOKENIZER_DEFAULT)
        detail = " ".join(str(exc).split())
        raise ScoringError(f"sacrebleu's {tokenizer} tokenizer (BLEU into {target_lang!r}) cannot be built: "
                           f"{detail}") from exc


def mt_scores(hypotheses: list[str], references: list[str], target_lang: str) -> list[dict]:
    """BLEU, chrF and TER as rows {metric, value, signature}; the signature says how each was computed."""
    rows = []
    for name, metric in (("bleu", bleu_metric(target_lang)), ("chrf", CHRF()), ("ter", TER())):
        score = metric.corpus_score(hypotheses, [references])
        rows.append({"metric": name, "value": round(score.score, 4), "signature": str(metric.get_signature())})
    return rows
