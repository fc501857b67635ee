"""Training configs, the kind registry and the YAML recipes."""

from __future__ import annotations

import pytest

from raftweb.registry import UnknownChoice
from raftweb.train import config as train_config
from raftweb.train.config import (
    PRESETS,
    GeneratorTrainConfig,
    PresetError,
    config_for,
    load_preset,
    preset_names,
    resolve_config,
)
from raftweb.train.embedding import EmbeddingTrainConfig
from raftweb.typedconfig import ConfigError


def test_it_ships_the_named_recipes_for_both_kinds() -> None:
    assert PRESETS == ("cpu-smoke", "lora-1gpu", "qlora-1gpu", "lora-multigpu")
    assert preset_names()[:4] == list(PRESETS)
    for name in PRESETS:
        recipe = load_preset(name)
        assert recipe["description"]
        assert isinstance(resolve_config("generator", name), GeneratorTrainConfig)
        assert isinstance(resolve_config("embedding", name), EmbeddingTrainConfig)
    smoke = resolve_config("generator", "cpu-smoke")
    assert (smoke.method, smoke.bf16, smoke.gradient_checkpointing) == ("full", "off", False)
    assert 0 < smoke.max_steps <= 20
    assert resolve_config("generator", "qlora-1gpu").method == "qlora"
    assert resolve_config("generator", "lora-1gpu").method == "lora"


def test_it_applies_defaults_then_the_recipe_then_the_overrides() -> None:
    cfg = resolve_config("generator", "lora-1gpu", {"lora_rank": "16", "epochs": 1})
    assert (cfg.lora_rank, cfg.epochs, cfg.save_steps) == (16, 1, 100)  # override, recipe
    assert cfg.seed == GeneratorTrainConfig().seed  # default
    assert cfg.kind == "generator"
    assert resolve_config("generator").to_dict() == GeneratorTrainConfig().to_dict()
    assert GeneratorTrainConfig.from_dict(cfg.to_dict()) == cfg  # config.json round trip


def test_it_reads_alpha_zero_as_twice_the_rank() -> None:
    assert GeneratorTrainConfig(lora_rank=16).effective_lora_alpha == 32
    assert GeneratorTrainConfig(lora_rank=16, lora_alpha=8).effective_lora_alpha == 8
    assert GeneratorTrainConfig().target_modules_value == "all-linear"
    assert GeneratorTrainConfig(target_modules="q_proj, v_proj").target_modules_value == [
        "q_proj",
        "v_proj",
    ]


def test_it_names_the_valid_presets_for_an_unknown_one() -> None:
    with pytest.raises(PresetError) as info:
        resolve_config("generator", "gpu-monster")
    assert "unknown training preset 'gpu-monster'" in info.value.message
    for name in PRESETS:
        assert name in info.value.message
    with pytest.raises(PresetError):
        load_preset("../config")  # names only, never paths


def test_it_names_the_field_for_a_bad_value() -> None:
    with pytest.raises(ConfigError, match="method must be one of lora, qlora, full"):
        resolve_config("generator", None, {"method": "dora"})
    with pytest.raises(ConfigError, match=r"lora_rank must be between 1 and 1024 \(preset"):
        resolve_config("generator", "lora-1gpu", {"lora_rank": 0})
    with pytest.raises(ConfigError, match="unknown generator training setting"):
        resolve_config("generator", None, {"rank": 8})


def test_it_finds_each_kinds_config_in_the_registry() -> None:
    assert config_for("generator") is GeneratorTrainConfig
    assert config_for("embedding") is EmbeddingTrainConfig
    with pytest.raises(UnknownChoice, match="choose one of: embedding, generator"):
        config_for("reranker")


def test_it_reads_yaml_on_off_as_words_for_text_settings(monkeypatch, tmp_path) -> None:
    (tmp_path / "mine.yaml").write_text("generator:\n  bf16: off\n  packing: on\n")
    monkeypatch.setattr(train_config, "RECIPES_DIR", tmp_path)
    cfg = resolve_config("generator", "mine")
    assert (cfg.bf16, cfg.packing) == ("off", True)
    with pytest.raises(PresetError, match="has no embedding settings"):
        resolve_config("embedding", "mine")
