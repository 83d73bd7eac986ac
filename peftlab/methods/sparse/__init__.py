"""sparse: SparseAdapter (He et al. 2022) and Large-Sparse, the project's own implementation: no PEFT library
implements pruning adapters at initialisation, and the paper's code is a fork of transformers 4.17.

    cfg = make_method_config("sparse", {"base": "pfeiffer", "sparsity": 0.8, "scoring": "snip"})
    model = apply_method(model, cfg)          # prunes with SNIP on a synthetic batch
    prune_at_init(model, cfg, first_batch)    # .model; optional, before training: SNIP on real data instead
"""

from ..registry import register_method
from .config import SparseConfig

register_method("sparse", SparseConfig, f"{__name__}.model")
