"""The project's own wrapper layers: keep the wrapped layer as `base_layer`, add a method delta."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .registry import MethodError

try:  # transformers 5 records output_hidden_states with forward hooks on the layer classes
    from transformers.utils.output_capturing import _active_collector
except ImportError:  # pragma: no cover - other transformers versions
    _active_collector = None


class MethodLayer(nn.Module):
    """Base of every wrapper the project writes (bottleneck adapters, Compacter, parallel adapters).

    Everything the wrapper owns outside `base_layer` belongs to the method; counting and saving find the
    method's parameters by walking these modules, not by matching names. Reads of `.weight` and the like
    are forwarded to the wrapped layer because model code reads them (T5 casts to `wo.weight.dtype`).
    """

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def method_parameters(self) -> Iterator[nn.Parameter]:
        base = {id(p) for p in self.base_layer.parameters()}
        return (p for p in self.parameters() if id(p) not in base)


def wrap_modules(
    model: nn.Module, patterns: list[str], make: Callable[[str, nn.Module], nn.Module], method: str,
    kind: type[nn.Module] | None = nn.Linear,
) -> list[str]:
    """Replace each module whose qualified name fully matches one of `patterns` by `make(name, module)`.

    Each must be exactly of type `kind` (None: any type). Returns the wrapped names, in `named_modules()`
    order, so that creation order (and hence the RNG stream) is the same on every run.
    """
    names = [n for n, _ in model.named_modules() if any(re.fullmatch(p, n) for p in patterns)]
    if not names:
        raise MethodError(f"{method}: no module of this {type(model).__name__} matches {patterns}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        module = getattr(parent, child)
        if kind is not None and type(module) is not kind:
            raise MethodError(f"{method}: {name} is a {type(module).__name__}, expected a plain {kind.__name__}")
        setattr(parent, child, make(name, module))
    return names


class RecordedHiddenStates:
    """Fixes output_hidden_states for a wrapped layer: transformers records the wrapped layer's own input and
    output (a CodaLayer's routed tokens only; a layer's output before the adapter around it); replace them with
    the wrapper's. Create it before calling the wrapped layer, call replace() after."""

    def __init__(self) -> None:
        collected = _active_collector.get() if _active_collector is not None else None
        self.states = collected.get("hidden_states") if collected else None
        self.before = len(self.states) if self.states is not None else 0

    def replace(self, layer_input: torch.Tensor, layer_output: torch.Tensor) -> None:
        states = self.states
        if states is None or len(states) == self.before:
            return
        if self.before == 0 and len(states) >= 2 and states[0] is not None:
            states[0] = layer_input
        if states[-1] is not None:
            states[-1] = layer_output
