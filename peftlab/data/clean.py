"""Cleaning and the leakage-free split of (source, target) pairs, and the corpus files they go to."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

SPLITS = ("train", "dev", "test")
MAX_LENGTH_RATIO = 3.0  # on script-weighted lengths, see _weighted_len
DROP_REASONS = (
    "dropped_empty",
    "dropped_template",
    "dropped_identical",
    "dropped_length_ratio",
    "dropped_duplicate",
)

# Template noise: printf/format placeholders, ${x}, HTML tags and entities. We DROP such pairs rather than
# strip the placeholders: stripping leaves fragments ("Delete selected ") and the two sides often order or
# inflect around the placeholder differently, so what remains is no longer a translation of each other.
TEMPLATE = re.compile(
    r"%\(\w+\)[-#0+ ]*\d*(?:\.\d+)?[a-zA-Z]"  # %(name)s, %(count)d
    r"|%(?:\d+\$)?[-#0+]*\d*(?:\.\d+)?[sdifrxXeEgGc]"  # %s, %d, %1$s, %.2f (no space flag: "50% done")
    r"|\{[\w.]*(?:![rsa])?(?::[^{}]*)?\}"  # {0}, {}, {name}, {0:.2f}
    r"|\$\{\w+\}"  # ${x}
    r"|</?[a-zA-Z][^<>]*>"  # <a href="...">, </b>
    r"|&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);"  # &amp; &#8212;
)


class DataError(ValueError):
    """Bad input to the data layer: the message names the key, package or file at fault."""


def normalise(text: str) -> str:
    """NFC and single spaces: the form every comparison, hash and output uses."""
    return unicodedata.normalize("NFC", " ".join(str(text).split()))


def _weighted_len(text: str) -> float:
    # CJK characters (East Asian Wide/Fullwidth) are dense: Japanese UI text has ~0.56x the characters of its
    # English source (measured on the l10n corpus). Counting them twice lets one bound serve ja/zh/ko and
    # alphabets alike.
    return sum(2.0 if unicodedata.east_asian_width(c) in "WF" else 1.0 for c in text)


def length_ratio_ok(src: str, tgt: str, max_ratio: float = MAX_LENGTH_RATIO) -> bool:
    a, b = sorted((_weighted_len(src), _weighted_len(tgt)))
    # +2 of slack so very short labels ("AM" -> "vorm.", "Go" -> "Los") are not judged on a ratio of 2-3 chars
    return (b + 2) / (a + 2) <= max_ratio


def clean_pairs(pairs: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Normalise, then drop (first reason wins): empty, template noise, identical, length ratio, duplicate."""
    counts = dict.fromkeys(["raw", *DROP_REASONS], 0)
    kept, seen = [], set()
    for src, tgt in pairs:
        counts["raw"] += 1
        src, tgt = normalise(src), normalise(tgt)
        if not src or not tgt:
            reason = "dropped_empty"
        elif TEMPLATE.search(src) or TEMPLATE.search(tgt):
            reason = "dropped_template"
        elif src.casefold() == tgt.casefold():
            reason = "dropped_identical"
        elif not length_ratio_ok(src, tgt):
            reason = "dropped_length_ratio"
        elif (src, tgt) in seen:
            reason = "dropped_duplicate"
        else:
            seen.add((src, tgt))
            kept.append((src, tgt))
            continue
        counts[reason] += 1
    return kept, counts


def source_key(src: str) -> str:
    """What 'the same source sentence' means for the split: normalised and case-folded."""
    return normalise(src).casefold()


def split_by_source(pairs: list[tuple[str, str]], sizes: dict[str, int], seed: int) -> dict[str, list]:
    """Seeded split where all pairs sharing a source go to one split: no source leaks across splits.

    Source groups are shuffled and fill test, then dev, up to exactly sizes[...] pairs (a group that does not
    fit goes on to the next split, finally train). Train keeps the shuffled order, so its first N pairs are a
    seeded random sample (what max_train takes).
    """
    groups: dict[str, list] = {}
    for pair in pairs:
        groups.setdefault(source_key(pair[0]), []).append(pair)
    keys = sorted(groups)  # independent of input order
    random.Random(seed).shuffle(keys)
    out: dict[str, list] = {name: [] for name in SPLITS}
    for key in keys:
        group = groups[key]
        name = next((n for n in ("test", "dev") if len(out[n]) + len(group) <= sizes.get(n, 0)), "train")
        out[name].extend(group)
    for name in ("dev", "test"):
        if len(out[name]) < sizes.get(name, 0):
            raise DataError(f"corpus has {len(pairs)} clean pairs: too few to fill {name}_size={sizes[name]}")
    return out


def pair_id(src: str, tgt: str) -> str:
    """Stable across reruns: a hash of the pair's text."""
    return hashlib.sha1(f"{src}\t{tgt}".encode()).hexdigest()[:16]


def to_jsonl(pairs: list[tuple[str, str]]) -> str:
    lines, seen = [], {}
    for src, tgt in pairs:
        base = pair_id(src, tgt)
        seen[base] = seen.get(base, 0) + 1  # repeated pairs (only in given eval splits) get -2, -3, ...
        rid = base if seen[base] == 1 else f"{base}-{seen[base]}"
        lines.append(json.dumps({"id": rid, "src": src, "tgt": tgt}, ensure_ascii=False) + "\n")
    return "".join(lines)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write beside the target, then rename: readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"missing corpus file {path}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
