"""solve_budget: hits 0.1% / 1% / 10% within the knob's granularity, refuses what it cannot reach."""

from __future__ import annotations

import copy
import time

import pytest
import torch

from peftlab.methods import (
    METHODS,
    BudgetError,
    MethodError,
    apply_method,
    count_parameters,
    make_method_config,
    solve_budget,
)
from peftlab.methods.tiny import example_batch, minilm_classifier, tiny_model

torch.set_num_threads(1)

SIZED = sorted(name for name, spec in METHODS.items() if spec.knob is not None)
KNOBLESS = sorted(name for name, spec in METHODS.items() if spec.knob is None)
BUDGETS = [0.001, 0.01, 0.1]
# Compacter is ~2d times smaller than a bottleneck adapter and prefix length is capped at 512: they
# cannot reach every budget on these small models; the others must.
MUST_REACH = {"lora", "houlsby", "pfeiffer", "parallel"}


def _budget_models():
    # Sized so that 0.1% is near the smallest knob (1) and 10% below the largest (d_model): a bottleneck
    # adapter's count grows ~2d/3-fold from r=1 to r=d, so d must be ~150 or more to span 0.1%..10%.
    return {
        "marian": tiny_model("marian", d_model=192, layers=2, vocab=20000),
        "bert": tiny_model("bert", "classification", d_model=192, layers=2, vocab=11000),
    }


@pytest.fixture(scope="module")
def models():
    return _budget_models() | {"minilm": minilm_classifier()}


def _meta_count(model, method: str, knob: str, value: int) -> int:
    return solve_budget(model, method, {knob: value}, None).trainable


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("method", SIZED)
@pytest.mark.parametrize("which", ["marian", "bert", "minilm"])
def test_solver_picks_the_closest_knob(models, which: str, method: str, budget: float) -> None:
    model = models[which]
    knob = METHODS[method].knob
    knobs = make_method_config(method, {}).knob_range(model.config)
    total = count_parameters(model).total
    target = budget * total
    try:
        sol = solve_budget(model, method, {}, budget)
    except BudgetError as err:
        assert method not in MUST_REACH, str(err)
        lowest, highest = (_meta_count(model, method, knob, k) for k in (knobs[0], knobs[-1]))
        assert lowest > 2 * target or highest < target / 2
        return
    k = getattr(sol.config, knob)
    assert sol.total == total
    # the meta-device count equals the count on the real model
    calibration = [example_batch(model)] * sol.config.calibration_batches() or None  # sparse's SNIP scores data
    real = apply_method(copy.deepcopy(model), sol.config, calibration=calibration)
    assert sol.trainable == count_parameters(real).trainable
    assert sol.realised == pytest.approx(sol.trainable / total)
    assert sol.rel_error == pytest.approx((sol.realised - budget) / budget)
    # no neighbouring knob value is closer to the target
    for other in (k - knobs.step, k + knobs.step):
        if other in knobs:
            assert abs(sol.trainable - target) <= abs(_meta_count(model, method, knob, other) - target)


@pytest.mark.parametrize("method", sorted(MUST_REACH))
def test_unreachable_budgets_raise(models, method: str) -> None:
    with pytest.raises(BudgetError, match=rf"{method}: budget 1e-07 .*out of reach.*reachable budgets"):
        solve_budget(models["marian"], method, {}, 1e-7)
    with pytest.raises(BudgetError, match="out of reach"):
        # embeddings are 95% of this model: even the largest knob trains under half of 50%
        solve_budget(tiny_model("marian", vocab=20000), method, {}, 0.5)


@pytest.mark.parametrize("method", KNOBLESS)
def test_knobless_methods_take_no_budget(method: str) -> None:
    model = tiny_model("bert", "classification")
    with pytest.raises(BudgetError, match=f"method '{method}' has no size knob; list it without budgets"):
        solve_budget(model, method, {}, 0.01)
    sol = solve_budget(model, method, {}, None)
    assert sol.rel_error is None
    assert sol.trainable == count_parameters(apply_method(model, sol.config)).trainable


def test_bad_budgets_and_knob_in_options() -> None:
    model = tiny_model("bert", "classification")
    for bad in (0, -0.1, 1.5, "0.01"):
        with pytest.raises(BudgetError, match="fraction"):
            solve_budget(model, "lora", {}, bad)
    with pytest.raises(BudgetError, match="rank"):
        solve_budget(model, "lora", {"rank": 4}, 0.01)
    sol = solve_budget(model, "lora", {"rank": 4}, None)  # no budget: the options as given
    assert sol.config.rank == 4 and sol.rel_error is None
    with pytest.raises(MethodError, match="unknown option 'rnak'"):
        solve_budget(model, "lora", {"rnak": 4}, 0.01)


def test_solver_leaves_model_and_rng_alone_and_is_fast() -> None:
    model = _budget_models()["marian"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modules = [type(m) for m in model.modules()]
    tiny = tiny_model("marian")
    rng = torch.random.get_rng_state()
    for method in SIZED:
        start = time.perf_counter()
        try:
            solve_budget(tiny, method, {}, 0.05)
        except BudgetError:
            pass
        assert time.perf_counter() - start < 1.0, method
        solve_budget(model, method, {}, None)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert [type(m) for m in model.modules()] == modules
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
