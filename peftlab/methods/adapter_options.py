"""Options of the bottleneck-adapter configs (houlsby, pfeiffer, parallel, compacter, coda), kept apart from
adapter_layers.py so that configs import without torch."""

from __future__ import annotations

from typing import Any

ACTIVATION_NAMES = ("relu", "gelu", "swish", "tanh")
MAX_WIDTH = 4  # the largest bottleneck the budget solver may pick, in multiples of d_model


def bottleneck_range(model_config: Any) -> range:
    """Bottleneck sizes the budget solver may choose. Past d the adapter is wider than the model, but a
    10% budget with one adapter per layer needs that on vocabulary-heavy models (in XLM-R ~70% of the
    parameters are embeddings)."""
    return range(1, MAX_WIDTH * model_config.hidden_size + 1)
