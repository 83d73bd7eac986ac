"""Target vs realised budget of every method with a size knob, on full-size BERT, Marian and T5 architectures
(built on the meta device from their published configs: shapes only, no weights, no download).

For each (model, method, budget) the solver's closest knob value, the fraction it trains (trainable / total,
peftlab's counting convention) and the relative miss; "refused" where the miss is beyond the default 10%
tolerance (the run would not plan), "out of reach" where even the knob's ends miss by 2x or more. Methods run
with their default options (sparse: Large-Sparse Pfeiffer at 50%; coda: k_ratio 0.25).

    PYTHONPATH=. python benchmarks/budget_table.py                       # bert, marian, t5 at 0.1%, 1%, 10%
    PYTHONPATH=. python benchmarks/budget_table.py --models "mt5-base (mt5)" --budgets 0.001 0.005
"""

from __future__ import annotations

import argparse
import re
import time

import torch

from peftlab.methods import DEFAULT_BUDGET_TOLERANCE, METHODS, BudgetError, count_parameters, solve_budget
from peftlab.methods.tiny import FULL_SIZE, full_size_meta_model

DEFAULT_MODELS = ["bert-base-uncased (bert)", "opus-mt-en-de (marian)", "t5-base (t5)"]


def row(model: torch.nn.Module, method: str, budget: float) -> tuple[str, str, str, str]:
    """(knob value, realised fraction, relative miss, verdict) for one budget."""
    knob = METHODS[method].knob
    try:
        # solve with a tolerance just under 100% to see the closest knob even where 10% refuses it
        sol = solve_budget(model, method, {}, budget, tolerance=0.999)
    except BudgetError as err:
        near = re.search(r"nearest reachable budgets: (.*)\. Ask", str(err))
        return "-", "-", "-", f"out of reach (nearest: {near.group(1) if near else err})"
    verdict = "ok" if abs(sol.rel_error) <= DEFAULT_BUDGET_TOLERANCE else "refused"
    return (f"{knob} {getattr(sol.config, knob)}", f"{sol.realised:.5f}", f"{sol.rel_error:+.1%}", verdict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=sorted(FULL_SIZE))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.001, 0.01, 0.1])
    parser.add_argument("--methods", nargs="+", default=sorted(n for n, s in METHODS.items() if s.knob))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    print("| model | total | method | target | knob | realised | rel. error | at 10% |")
    print("|---|---:|---|---:|---|---:|---:|---|")
    for name in args.models:
        model = full_size_meta_model(name)
        total = count_parameters(model).total
        for method in args.methods:
            for budget in args.budgets:
                knob, realised, err, verdict = row(model, method, budget)
                cells = [name, f"{total / 1e6:.1f}M", method, f"{budget:g}", knob, realised, err, verdict]
                print("| " + " | ".join(cells) + " |")
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
