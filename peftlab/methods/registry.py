"""The method registry: one `MethodSpec` per method, filled by `register_method` in each method package."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn


class MethodError(ValueError):
    """A method cannot be configured, applied, saved or loaded as asked."""


class UnknownMethodError(MethodError):
    """No method is registered under this name."""


class BudgetError(MethodError):
    """A parameter budget cannot be met (or makes no sense) for a method."""


# The largest relative miss |realised - target| / target a budget label may hide (solve_budget refuses beyond
# it); a method entry's `budget_tolerance` overrides it. Here, not in budget.py, so planning needs no torch.
DEFAULT_BUDGET_TOLERANCE = 0.10


@dataclass
class MethodConfig:
    """Base class of every method's config: a dataclass whose fields are the method's options.

    Subclasses set the class variables `method` (the registry name) and `knob` (the name of the field that
    sets the method's size, or None), and validate their fields in `__post_init__`.
    """

    method: ClassVar[str] = ""
    knob: ClassVar[str | None] = None
    # whether the method needs the family table (families.py): where adapters, LoRA, IA3 attach, or the
    # family's layout the method was checked on. Methods that train all or nothing accept any family.
    needs_family: ClassVar[bool] = True

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the options plus the method name."""
        out = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}
        out["method"] = self.method
        return out

    def derived(self) -> dict[str, Any]:
        """Values the options imply and a reader needs (LoRA's effective scale), recorded beside the options
        in method_config.json under "derived"; not options themselves."""
        return {}

    def knob_range(self, model_config: Any) -> range:
        """The knob values the budget solver may choose from, for a model with this config."""
        raise MethodError(f"method {self.method!r} has no size knob")

    def replace(self, **changes: Any) -> MethodConfig:
        return dataclasses.replace(self, **changes)

    def calibration_batches(self) -> int:
        """How many training batches applying the method scores (SparseAdapter's SNIP); 0: it needs no data.

        A training run hands over the first ones it will train on (peftlab.train.first_batches), so the
        method sees the run's own data and a resumed run rebuilds the same model."""
        return 0

    def code_methods(self) -> tuple[str, ...]:
        """The registered methods whose packages this config runs (its own, plus a base method it wraps): what
        the workflow fingerprints, so that editing any of them reruns the runs that use it."""
        return (self.method,)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list, set, frozenset)):
        return list(value)
    return value


def check_int(cfg: MethodConfig, name: str, minimum: int = 1) -> None:
    """Raise MethodError unless `cfg.<name>` is an int >= minimum (YAML strings and floats are rejected)."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MethodError(f"{cfg.method}: option {name!r} must be an integer >= {minimum}, got {value!r}")


def check_float(cfg: MethodConfig, name: str, minimum: float = 0.0, maximum: float = float("inf")) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
        raise MethodError(
            f"{cfg.method}: option {name!r} must be a number in [{minimum}, {maximum}], got {value!r}"
        )


def check_choice(cfg: MethodConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise MethodError(f"{cfg.method}: option {name!r} must be one of {list(choices)}, got {value!r}")


def normalise_names(cfg: MethodConfig, name: str) -> None:
    """Turn a list option (YAML/JSON) into a tuple of str; None stays None (= the family's default)."""
    value = getattr(cfg, name)
    if value is None:
        return
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise MethodError(f"{cfg.method}: option {name!r} must be a list of module names, got {value!r}")
    setattr(cfg, name, tuple(value))


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its config class, and the module whose `inject` applies it.

    The module is imported on first use, so the registry and every config import without torch, peft or
    transformers: the workflow validates a grid of thousands of jobs without loading them.
    """

    name: str
    config_cls: type[MethodConfig]
    model_module: str
    mergeable: bool = False  # can merge_method fold it into the base weights (LoRA, IA3)

    @property
    def knob(self) -> str | None:
        return self.config_cls.knob

    @property
    def needs_family(self) -> bool:
        return self.config_cls.needs_family

    def inject(self, model: nn.Module, cfg: MethodConfig) -> nn.Module:
        """The method-specific part of `apply_method`, on a model whose parameters are already all frozen:
        wrap or add modules, mark the method's parameters trainable, return the model (or a wrapper
        around it, for peft's prompt-learning models)."""
        return importlib.import_module(self.model_module).inject(model, cfg)

    def calibrate(self, model: nn.Module, cfg: MethodConfig, batches: list[dict[str, Any]]) -> None:
        """The data-dependent part of `apply_method`, for a config whose calibration_batches() is > 0: score
        `batches` (model(**batch) inputs with labels) and finish the method in place, before any training."""
        importlib.import_module(self.model_module).calibrate(model, cfg, batches)


METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str, config_cls: type[MethodConfig], model_module: str, mergeable: bool = False
) -> MethodSpec:
    if name in METHODS:
        raise MethodError(f"method {name!r} is already registered")
    if config_cls.method != name:
        raise MethodError(f"{config_cls.__name__}.method is {config_cls.method!r}, expected {name!r}")
    knob = config_cls.knob
    if knob is not None and knob not in {f.name for f in fields(config_cls)}:
        raise MethodError(f"{config_cls.__name__}: knob {knob!r} is not one of its fields")
    spec = MethodSpec(name=name, config_cls=config_cls, model_module=model_module, mergeable=mergeable)
    METHODS[name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise UnknownMethodError(f"unknown method {name!r}; registered methods: {sorted(METHODS)}") from None


def make_method_config(name: str, options: dict[str, Any] | None = None) -> MethodConfig:
    """Build and validate a method's config from a plain dict of options (e.g. from the workflow config)."""
    spec = get_method(name)
    options = dict(options or {})
    allowed = sorted(f.name for f in fields(spec.config_cls))
    for key in options:
        if key not in allowed:
            raise MethodError(f"{name}: unknown option {key!r}; allowed options: {allowed}")
    return spec.config_cls(**options)
