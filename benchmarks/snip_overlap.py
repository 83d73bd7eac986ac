"""How much SparseAdapter's SNIP masks depend on the batch they score (issue 13.2).

On the real MiniLM (all-MiniLM-L6-v2, a fresh 5-class head) with a Pfeiffer adapter of bottleneck 16 (or LoRA
of rank 16 on query and value, --base lora) at 80% sparsity, ranked globally, the adapters' init fixed (torch
seed 0), and real data: English CLDR and Django/Sphinx phrases labelled by category (territory, language,
currency, unit, ui: the demo's classification task), tokenised by MiniLM's tokenizer to at most 32 tokens.
Each mask scores `score_batches` batches of 32:
- real batches: the run's first batches (peftlab.train.first_batches) under two data-order seeds;
- the removed synthetic batch: 8 x 32 random token ids from the vocabulary, ending in [SEP], random labels
  (a copy of the code apply_method used before it was handed training batches);
- random scoring under two torch seeds: the chance level, (1 - sparsity) in expectation.
Overlap = kept entries two masks share / entries each keeps. Also printed: the share of the kept budget in
the zero-initialised matrices (up-projections, LoRA's B), scored by the documented rule (SparseConfig) and, for
comparison (--base lora), by the removed one: a Gaussian at the partner's std, for LoRA's B on MiniLM's square
projections N(0, 1/sqrt(3 * 384)), where the documented rule draws U(-1/sqrt(16), 1/sqrt(16)).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/snip_overlap.py [--score-batches N] [--base lora]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import torch
from transformers import AutoTokenizer

from peftlab.data.l10n import labelled_phrases
from peftlab.methods import apply_method, make_method_config
from peftlab.methods.sparse import model as sparse_model
from peftlab.methods.sparse.layer import MaskedLinear
from peftlab.methods.tiny import minilm_classifier, minilm_path
from peftlab.train import first_batches
from peftlab.train_config import TrainConfig

CATEGORIES = ["territory", "language", "currency", "unit", "ui"]


def rows(tokenizer) -> list[dict]:
    phrases = labelled_phrases("en", CATEGORIES)
    out = []
    for key, category, text in phrases:
        ids = tokenizer(text, truncation=True, max_length=32)["input_ids"]
        out.append({"id": key, "input_ids": ids, "label": CATEGORIES.index(category)})
    return out


def synthetic_batch(model, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The removed calibration batch: random ids >= 4, the last one EOS/[SEP], random class labels."""
    config = model.config
    ids = torch.randint(4, config.vocab_size, (8, 32), generator=gen)
    eos = config.sep_token_id if getattr(config, "sep_token_id", None) is not None else 102
    ids[ids == eos] = 4
    ids[:, -1] = eos
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(0, config.num_labels, (8,), generator=gen)}


def masks(base, cfg, batches) -> list[torch.Tensor]:
    torch.manual_seed(0)  # the same adapter init for every mask: only the scored data differs
    model = apply_method(copy.deepcopy(base), cfg, calibration=batches)
    return [m.weight_mask.clone() for m in model.modules() if isinstance(m, MaskedLinear)]


def overlap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    shared = sum(int((x & y).sum()) for x, y in zip(a, b, strict=True))
    return shared / sum(int(x.sum()) for x in a)


def removed_lora_rule(weight: torch.Tensor) -> torch.Tensor:
    """The removed rule for LoRA's B (out, r), for the comparison: N(0, std of A's values), A being (r, out) on
    MiniLM's square projections, Kaiming-uniform with std 1/sqrt(3 * out). (For an adapter's up-projection the
    removed rule, N(0, std of the down-projection's values), is the documented one up to sampling.)"""
    return torch.randn_like(weight) / (3 * weight.shape[0]) ** 0.5


def up_share(mask: list[torch.Tensor]) -> float:
    kept = [int(m.sum()) for m in mask]
    return sum(kept[1::2]) / sum(kept)  # pairs in module order: (down, up)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--score-batches", type=int, default=1)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--base", choices=["pfeiffer", "lora"], default="pfeiffer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    data = rows(tokenizer)
    base = minilm_classifier(num_labels=len(CATEGORIES)).eval()
    options = {"base": args.base, "size": 16, "sparsity": args.sparsity, "score_batches": args.score_batches}
    snip = make_method_config("sparse", options)
    train_cfg = TrainConfig(batch_size=32)
    pad = tokenizer.pad_token_id
    real = [masks(base, snip, first_batches(data, dataclasses.replace(train_cfg, seed=s), pad, args.score_batches))
            for s in (0, 1)]
    gen = torch.Generator().manual_seed(0)
    synthetic = masks(base, snip, [synthetic_batch(base, gen) for _ in range(args.score_batches)])
    randoms = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = apply_method(copy.deepcopy(base), snip.replace(scoring="random"))
        randoms.append([m.weight_mask.clone() for m in model.modules() if isinstance(m, MaskedLinear)])
    removed = None
    if args.base == "lora":
        sparse_model.lora_b_scoring_init = removed_lora_rule
        removed = masks(base, snip, first_batches(data, train_cfg, pad, args.score_batches))
    print(f"{len(data)} labelled phrases; MiniLM + {args.base}(16), sparsity {args.sparsity}, global, "
          f"{args.score_batches} batch(es) of 32 scored")
    print(f"overlap real(seed 0) vs real(seed 1):  {overlap(real[0], real[1]):.3f}")
    print(f"overlap real(seed 0) vs synthetic:     {overlap(real[0], synthetic):.3f}")
    print(f"overlap random(seed 0) vs random(1):   {overlap(randoms[0], randoms[1]):.3f}")
    print(f"kept budget in the zero-init matrices (up, B): real {up_share(real[0]):.3f}, "
          f"synthetic {up_share(synthetic):.3f}, random {up_share(randoms[0]):.3f}")
    if removed is not None:
        print(f"  real, B scored by the removed rule: {up_share(removed):.3f}; "
              f"overlap with the documented rule's mask {overlap(real[0], removed):.3f}")


if __name__ == "__main__":
    main()
