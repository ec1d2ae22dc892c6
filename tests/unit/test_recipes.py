"""The named training recipes build valid configs, and params.yaml trains with the default one."""

from __future__ import annotations

from pathlib import Path

import pytest

from palsyseg.params import from_section, load_params
from palsyseg.recipes import DEFAULT_RECIPE, RECIPES, recipe
from palsyseg.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def test_each_recipe_is_a_valid_train_section() -> None:
    paper = from_section(recipe("paper"), TrainConfig)
    assert paper == TrainConfig()  # the paper's recipe is TrainConfig's own defaults (§4.3)
    ours = from_section(recipe("palsyseg"), TrainConfig)
    assert ours.optimizer == paper.optimizer == "sgd" and ours.schedule == "poly"
    assert ours.warmup == 0.03
    assert ours.lr == 0.06 and paper.lr == 0.01  # twice the rate the warm-up made safe
    assert ours.loss.class_weights == (1, 1, 1, 1, 1, 1, 3)  # FPP ×3 in the cross-entropy
    assert ours.loss.boundary_category_weights is None  # eq. 7 stays uniform...
    assert ours.loss.boundary_weight == 0.25 and paper.loss.boundary_weight == 1.0  # ...lighter
    assert ours.loss.boundary_outer and not paper.loss.boundary_outer  # ...and two-sided
    assert ours.class_offsets and not paper.class_offsets  # per-class offsets from validation
    assert ours.loss.dice_weight == 1.0 and paper.loss.dice_weight == 0.0
    assert ours.loss.decision_weight == 1.0 and paper.loss.decision_weight == 0.0
    assert ours.decision_refit == 6000 and paper.decision_refit == 0  # palsyseg.refit


def test_params_yaml_trains_with_the_default_recipe() -> None:
    train = load_params(ROOT / "params.yaml")["train"]
    for key, value in RECIPES[DEFAULT_RECIPE].items():
        assert train.get(key) == value, key


def test_recipe_returns_a_copy_and_names_the_valid_ones() -> None:
    recipe("palsyseg")["loss"]["class_weights"][6] = 99
    assert RECIPES["palsyseg"]["loss"]["class_weights"][6] == 3
    with pytest.raises(ValueError, match="unknown recipe 'fast'; valid names: paper, palsyseg"):
        recipe("fast")
