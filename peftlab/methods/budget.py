"""solve_budget: pick a method's size knob so its trainable parameters hit a fraction of the base model."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .core import apply_method, count_parameters, output_layer_tied, untie_output_layer
from .registry import DEFAULT_BUDGET_TOLERANCE, BudgetError, MethodConfig, get_method, make_method_config


@dataclass(frozen=True)
class BudgetSolution:
    config: MethodConfig
    trainable: int  # trainable parameters of the adapted model (head excluded)
    total: int  # the base model's backbone parameters (count_parameters(model).total)
    realised: float  # trainable / total
    rel_error: float | None  # (realised - budget) / budget; None when no budget was asked for


def solve_budget(
    model: nn.Module,
    name: str,
    options: dict[str, Any] | None,
    budget: float | None,
    tolerance: float = DEFAULT_BUDGET_TOLERANCE,
) -> BudgetSolution:
    """Choose the knob value whose trainable count is closest to budget * total.

    Views group runs by their budget label, so a label must say what trained: when the closest knob value
    misses the target by more than `tolerance` (relative), this raises a BudgetError naming the nearest
    reachable budgets below and above, instead of training something else under the label. A method entry
    whose knob is coarse on a model (prefix length on a small one, Compacter's multiples of phm_dim) can set
    a larger `budget_tolerance`. Plain SparseAdapter (`large: false`) is matched as its dense adapter, as its
    docstring says; it then trains about (1 - sparsity) of the budget on purpose.

    Counting happens on a copy of the model built on the meta device (no memory, no weights), so the
    model is left untouched, as is torch's RNG.
    """
    spec = get_method(name)
    options = dict(options or {})
    total = count_parameters(model).total
    if budget is not None and spec.knob is None:
        raise BudgetError(f"method {name!r} has no size knob; list it without budgets (got budget {budget})")
    if budget is None:
        cfg = make_method_config(name, options)
        trainable = _MetaCounter(model).trainable(cfg)
        return BudgetSolution(cfg, trainable, total, trainable / total, None)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise BudgetError(f"{name}: budget must be a fraction in (0, 1], got {budget!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise BudgetError(f"{name}: budget_tolerance must be a relative error in [0, 1), got {tolerance!r}")
    if spec.knob in options:
        raise BudgetError(
            f"{name}: option {spec.knob!r} is chosen by the budget solver; drop the option or the budget"
        )

    proto = make_method_config(name, options)
    knobs = proto.knob_range(model.config)
    target = budget * total
    counter = _MetaCounter(model)
    counts: dict[int, int] = {}

    def count(i: int) -> int:
        if i not in counts:
            probe = proto.replace(**{spec.knob: knobs[i]})
            # a config may be sized as another method and then changed (SparseAdapter prunes the dense adapter)
            counts[i] = counter.trainable(getattr(probe, "sizing_config", lambda: probe)())
        return counts[i]

    # Bracket the target between adjacent knob values. Counts grow linearly with the knob for every
    # method here, so interpolation lands on the bracket in one or two probes; bisection is the fallback.
    lo, hi = 0, len(knobs) - 1
    probes = 0
    while hi - lo > 1 and count(lo) < target < count(hi):
        probes += 1
        if probes <= 3:
            guess = lo + int((target - count(lo)) / (count(hi) - count(lo)) * (hi - lo))
        else:
            guess = (lo + hi) // 2
        guess = min(max(guess, lo + 1), hi - 1)
        if count(guess) <= target:
            lo = guess
            if count(guess + 1) > target:
                hi = guess + 1
        else:
            hi = guess
            if count(guess - 1) <= target:
                lo = guess - 1
    best = min((lo, hi), key=lambda i: (abs(count(i) - target), i))
    if abs(count(best) - target) > tolerance * target:
        raise BudgetError(_miss_message(name, spec.knob, budget, tolerance, total, target,
                                        [(knobs[i], count(i)) for i in (lo, hi)], (knobs[0], knobs[-1])))
    cfg = proto.replace(**{spec.knob: knobs[best]})
    trainable = counter.trainable(cfg)  # what the chosen config trains (below count(best) for a pruned one)
    realised = trainable / total
    return BudgetSolution(cfg, trainable, total, realised, (realised - budget) / budget)


def _miss_message(name: str, knob: str, budget: float, tolerance: float, total: int, target: float,
                  bracket: list[tuple[int, int]], ends: tuple[int, int]) -> str:
    """The refusal: how far off the closest knob is, and the budgets on either side that a config can ask for."""
    below = max(((k, c) for k, c in bracket if c <= target), key=lambda kc: kc[1], default=None)
    above = min(((k, c) for k, c in bracket if c > target), key=lambda kc: kc[1], default=None)

    def side(kc: tuple[int, int] | None, where: str, end: int) -> str:
        if kc is None:
            return f"none {where} ({knob} {end} is the {'smallest' if where == 'below' else 'largest'})"
        return f"{kc[1] / total:.3g} {where} ({knob} {kc[0]}, {kc[1]:,} parameters)"

    nearest = min((kc for kc in (below, above) if kc), key=lambda kc: abs(kc[1] - target))
    return (
        f"{name}: budget {budget:g} ({target:,.0f} of {total:,} parameters) is out of reach within "
        f"{tolerance:.0%}: the closest {knob} trains {nearest[1] / total:.3g} ({nearest[1] / target - 1:+.0%}); "
        f"nearest reachable budgets: {side(below, 'below', ends[0])}, {side(above, 'above', ends[1])}. "
        "Ask for one of those, or give the method entry a budget_tolerance if its knob is this coarse"
    )


# (model class, model config, method config) -> trainable count; counts depend on nothing else when the
# model is what its config builds, and solving several budgets for one model re-uses the probes.
_COUNTS: dict[tuple[str, str, str], int] = {}
_MAX_CACHED = 10_000


class _MetaCounter:
    """Counts a method's trainable parameters on meta-device copies of a model."""

    def __init__(self, model: nn.Module) -> None:
        cls = type(model)
        untied = model.get_output_embeddings() is not None and not output_layer_tied(model)
        # the config does not say whether a loaded (m)T5 kept its own lm_head (see untie_output_layer): the key does
        name = f"{cls.__module__}.{cls.__qualname__}" + ("+untied" if untied else "")
        self.key = name, model.config.to_json_string(use_diff=False)
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            self.template = cls(copy.deepcopy(model.config))
            if untied:
                untie_output_layer(self.template)
        if count_parameters(self.template).total != count_parameters(model).total:
            # the model differs from what its config builds (e.g. edited by hand): count on a real copy
            self.template, self.key = copy.deepcopy(model), None

    def trainable(self, cfg: MethodConfig) -> int:
        key = self.key and (*self.key, json.dumps(cfg.to_dict(), sort_keys=True))
        if key in _COUNTS:
            return _COUNTS[key]
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            shadow = apply_method(copy.deepcopy(self.template), cfg)
            count = count_parameters(shadow).trainable
        if key and len(_COUNTS) < _MAX_CACHED:
            _COUNTS[key] = count
        return count
