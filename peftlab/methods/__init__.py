"""peftlab's method library: one package per PEFT method, one registry, one way to count.

    cfg = make_method_config("lora", {"alpha": 16})             # or solve_budget(...).config
    model = apply_method(base_model, cfg)                       # freezes all but the method (+ task head)
    sha256 = save_method(model, cfg, out_dir); load_method(fresh_base, out_dir, sha256)

Counting convention (count_parameters, used for every method and every budget):
- each tensor counts once: tied or shared tensors (Marian's shared embeddings and lm_head, Compacter's
  shared rule matrices) are one Parameter object and are counted once;
- fixed position tables (Marian's sinusoidal embed_positions, which transformers 5 marks trainable on
  reload) are frozen by every method and counted nowhere;
- the classification task head is trained by every method but left out of `trainable` and `total`;
  it is reported separately as `head`;
- `total` is the base model's backbone: it leaves out the parameters a method adds (reported as
  `added`), so it is the same before and after apply_method;
- a budget is a fraction of `total`: realised = trainable / total (ParamCount.fraction).

Methods without a size knob (base, full, bitfit, lntuning, ia3) run once, not once per budget.
"""

import importlib
from typing import TYPE_CHECKING

# Importing a method's package registers it. Packages, configs and the registry import without torch;
# what needs torch (core, budget, each method's model.py) loads on first use, so the workflow plans a
# grid of thousands of jobs without importing torch, peft or transformers.
from . import (  # noqa: F401
    base,
    bitfit,
    coda,
    compacter,
    full,
    houlsby,
    ia3,
    lntuning,
    lora,
    parallel,
    peft,
    pfeiffer,
    prefix,
    sparse,
)
from .registry import (
    DEFAULT_BUDGET_TOLERANCE,
    METHODS,
    BudgetError,
    MethodConfig,
    MethodError,
    MethodSpec,
    UnknownMethodError,
    get_method,
    make_method_config,
    register_method,
)

_LAZY = {
    "BudgetSolution": ".budget",
    "solve_budget": ".budget",
    "ParamCount": ".core",
    "apply_method": ".core",
    "count_parameters": ".core",
    "load_method": ".core",
    "merge_method": ".core",
    "read_method_files": ".core",
    "save_method": ".core",
    "trainable_state_dict": ".core",
}

if TYPE_CHECKING:
    from .budget import BudgetSolution, solve_budget
    from .core import (
        ParamCount,
        apply_method,
        count_parameters,
        load_method,
        merge_method,
        read_method_files,
        save_method,
        trainable_state_dict,
    )


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_BUDGET_TOLERANCE",
    "METHODS",
    "BudgetError",
    "BudgetSolution",
    "MethodConfig",
    "MethodError",
    "MethodSpec",
    "ParamCount",
    "UnknownMethodError",
    "apply_method",
    "count_parameters",
    "get_method",
    "load_method",
    "make_method_config",
    "merge_method",
    "read_method_files",
    "register_method",
    "save_method",
    "solve_budget",
    "trainable_state_dict",
]
