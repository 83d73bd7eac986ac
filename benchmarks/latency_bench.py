"""Is the benchmark's latency the model's, or the machine's? (issue 13, item 5)

Three figures, all with peftlab.bench as the workflow runs it (each model timed beside the base model in one
process, interleaved repeats, ratio = median of per-repeat ratios):
1. the demo's base model on every demo translation task, against an identical copy of itself: the ratios
   must be ~1 on every task, whatever the absolute milliseconds do;
2. the coefficient of variation (std / mean) of every figure: absolute latency of the model and of the
   base, and of the per-repeat ratio;
3. LoRA at 5% (alpha 16, the budget solver's rank), unmerged and merged, and Houlsby at 5% for contrast,
   against the base model on en-de.

The model is the demo's Marian (config/config.yaml: d_model 128, 2+2 layers, 4 heads, ffn 512) on the demo's
own tokenizer, with random weights: every call generates exactly `new_tokens` tokens, so latency does not
depend on the weights' values (methods get non-zero weights, as training would leave them). Inputs are each
task's test sources with its target-language tag. The tokenizer and corpora come from the demo's first
jobs (about 10 minutes on a loaded 2-core machine):

    PATH=.venv/bin:$PATH snakemake --cores 1 results/demo/base/tiny-marian/tokenizer/tokenizer.json
    PYTHONPATH=. python benchmarks/latency_bench.py [--repeats 20] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

REPO = Path(__file__).resolve().parents[1]
BUDGET = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study-dir", type=Path, default=REPO / "results" / "demo")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's threads_per_job: 1)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    import torch
    import yaml

    from peftlab.bench import Variant, benchmark_generation, run_variants
    from peftlab.methods import apply_method, load_method, save_method, solve_budget
    from peftlab.methods.core import added_parameters
    from peftlab.model_source import source_prefix
    from peftlab.models import build_marian, load_tokenizer, read_jsonl

    torch.set_num_threads(args.threads)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    spec = config["base_models"]["tiny-marian"]
    build = spec["build"]
    tokenizer_dir = args.study_dir / "base" / "tiny-marian" / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").exists():
        sys.exit(f"no demo tokenizer in {tokenizer_dir}: run the snakemake command in this script's docstring")
    tokenizer = load_tokenizer(str(tokenizer_dir))
    base = build_marian(tokenizer, d_model=build["d_model"], layers=build["layers"], heads=build["heads"],
                        ffn_dim=build["ffn_dim"]).eval()
    settings = {"batch_sizes": args.batch_sizes, "warmup": args.warmup, "repeats": args.repeats,
                "new_tokens": config["benchmark"]["new_tokens"]}
    tasks = [t for t, e in config["tasks"].items() if e["kind"] == "translation"]

    def run(label: str, task: str, variants: list[Variant]) -> list[dict]:
        sources = [r["src"] for r in read_jsonl(args.study_dir / "corpora" / task / "test.jsonl")]
        rows = benchmark_generation(variants, base, tokenizer, sources,
                                    source_prefix=source_prefix(spec, config["tasks"][task]), **settings)
        for row in rows:
            row.update(label=label + (" merged" if row["merged"] else ""), on=task)
        return rows

    rows = []
    for task in tasks:
        rows += run("base vs base", task, [Variant(copy.deepcopy(base), merged=False, deployed=True)])
    with tempfile.TemporaryDirectory() as tmp:
        for method, options in (("lora", {"alpha": 16}), ("houlsby", {})):
            cfg = solve_budget(base, method, options, BUDGET).config
            model = apply_method(copy.deepcopy(base), cfg)
            torch.manual_seed(1)
            with torch.no_grad():  # off the identity initialisation, as training leaves it
                for p in added_parameters(model):
                    p.add_(torch.randn_like(p) * 0.1)
            save_method(model, cfg, Path(tmp, method))
            variants = run_variants(lambda m=method: load_method(copy.deepcopy(base), Path(tmp, m)).eval(),
                                    Path(tmp, method))
            knob = cfg.knob
            rows += run(f"{method} 5% ({knob}={getattr(cfg, knob)})", "en-de", variants)

    print(f"demo Marian (random weights), torch threads {args.threads}, greedy {settings['new_tokens']} tokens, "
          f"warm-up {args.warmup}, {args.repeats} interleaved repeats; CV = std / mean\n")
    header = ("model", "task", "batch", "ms", "ms CV", "base ms", "base CV", "ratio", "ratio p10-p90", "ratio CV")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(" | ".join([r["label"], r["on"], str(r["batch_size"]), f"{r['latency_ms_median']:.2f}",
                          f"{100 * r['latency_cv']:.1f}%", f"{r['base_latency_ms_median']:.2f}",
                          f"{100 * r['base_latency_cv']:.1f}%", f"{r['ratio_to_base']:.3f}",
                          f"{r['ratio_p10']:.3f}-{r['ratio_p90']:.3f}", f"{100 * r['ratio_cv']:.1f}%"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
