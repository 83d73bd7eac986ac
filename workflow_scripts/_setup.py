"""Shared start of every workflow script: log to the rule's log file, pin torch threads."""

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # peftlab from the checkout


def start(snakemake) -> None:
    logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # An uncaught error goes to the rule's log too, not only to Snakemake's stderr (a failed job's log was empty).
    previous_hook = sys.excepthook

    def log_uncaught(kind, error, trace):
        logging.getLogger("peftlab").critical("uncaught error", exc_info=(kind, error, trace))
        previous_hook(kind, error, trace)

    sys.excepthook = log_uncaught
    # One OpenMP pool per job, sized to the job's threads; passive waiting stops idle threads from
    # spinning against the jobs running beside this one.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # A GPU job (resources: gpu=n, see rules/common.smk) takes its own GPUs before CUDA starts (peftlab/gpu.py).
    if (wanted := int(getattr(snakemake.resources, "gpu", 0) or 0)) >= 1:
        from peftlab.gpu import claim_gpus

        slots = claim_gpus(wanted)
        if slots is not None:
            logging.getLogger("peftlab").info("GPU slots %s (CUDA_VISIBLE_DEVICES=%s)", slots,
                                              os.environ["CUDA_VISIBLE_DEVICES"])
    import torch

    torch.set_num_threads(max(1, snakemake.threads))
