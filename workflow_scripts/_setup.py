"""Shared start of every workflow script: hand the job to a warm process where one serves (_warm_start.py),
log to the rule's log file, pin torch threads."""

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # peftlab from the checkout


def start(snakemake) -> None:
    from _warm_start import hand_off

    # Before any import and before the hand-off (a warm server imports under the job's environment):
    # one OpenMP pool per job, sized to the job's threads, whose passive waiting stops idle threads from
    # spinning against the jobs beside this one; no weight-loading progress bars (one per job on the console,
    # HF_HUB_DISABLE_PROGRESS_BARS=0 shows them).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    gpus = int(getattr(snakemake.resources, "gpu", 0) or 0)
    hand_off(gpus)  # returns where this process runs the job itself (cold, or already the warm fork)
    logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # An uncaught error goes to the rule's log too, not only to Snakemake's stderr (a failed job's log was empty).
    previous_hook = sys.excepthook

    def log_uncaught(kind, error, trace):
        logging.getLogger("peftlab").critical("uncaught error", exc_info=(kind, error, trace))
        previous_hook(kind, error, trace)

    sys.excepthook = log_uncaught
    # A GPU job (resources: gpu=n, see rules/common.smk) takes its own GPUs before CUDA starts (peftlab/gpu.py).
    if gpus >= 1:
        from peftlab.gpu import claim_gpus

        slots = claim_gpus(gpus)
        if slots is not None:
            logging.getLogger("peftlab").info("GPU slots %s (CUDA_VISIBLE_DEVICES=%s)", slots,
                                              os.environ["CUDA_VISIBLE_DEVICES"])
    import torch

    torch.set_num_threads(max(1, snakemake.threads))
