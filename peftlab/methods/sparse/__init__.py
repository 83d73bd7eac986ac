"""sparse: SparseAdapter (He et al. 2022) and Large-Sparse, the project's own implementation: no PEFT library
implements pruning adapters at initialisation, and the paper's code is a fork of transformers 4.17.

    cfg = make_method_config("sparse", {"base": "pfeiffer", "sparsity": 0.8, "scoring": "snip"})
    batches = first_batches(train_rows, train_cfg, pad_id, cfg.calibration_batches())   # peftlab.train
    model = apply_method(model, cfg, calibration=batches)   # SNIP on the run's first training batches
"""

from ..registry import register_method
from .config import SparseConfig

register_method("sparse", SparseConfig, f"{__name__}.model")
