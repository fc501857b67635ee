"""Typed training configs, the kind registry, and the YAML recipes (presets).

``config.json`` in a run directory is ``config_for(kind).from_dict(...).to_dict()``: every value
validated, with bounds, labels and help for the form and the API (:mod:`raftweb.typedconfig`).

Recipes are YAML files in ``raftweb/train/recipes/`` (``cpu-smoke``, ``lora-1gpu``,
``qlora-1gpu``, ``lora-multigpu``), one section per kind::

    description: ...
    generator:           # GeneratorTrainConfig values
      method: lora
      ...
    embedding:           # EmbeddingTrainConfig values (raftweb.train.embedding)
      batch_size: 64

A user copies one, edits it, and drops it into the folder (or passes the values as overrides).
:func:`resolve_config` applies, in order: the config's defaults, the recipe's section for the
kind, the overrides.

This module is cheap to import (no torch): forms and the API use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from raftweb.errors import Invalid
from raftweb.registry import Registry

# ---- the embedding config is defined by its own script; registered below (see KINDS).
from raftweb.train.embedding import EmbeddingTrainConfig
from raftweb.typedconfig import ConfigError, TypedConfig, knob

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
PRESETS: tuple[str, ...] = ("cpu-smoke", "lora-1gpu", "qlora-1gpu", "lora-multigpu")
METHODS: tuple[str, ...] = ("lora", "qlora", "full")

# max_seq_length 0 ("from the data") never goes past this many tokens.
MAX_SEQ_LENGTH_CAP = 4096
GENERATOR = "generator"

_PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class PresetError(Invalid):
    """A recipe name that does not exist, or a recipe file that is not valid."""


@dataclass(frozen=True)
class GeneratorTrainConfig(TypedConfig):
    """Settings of a generator fine-tuning run (``config.json`` when ``kind == "generator"``)."""

    setting_noun: ClassVar[str] = "generator training setting"

    kind: str = knob(
        GENERATOR,
        label="Kind",
        choices=(GENERATOR,),
        form=False,
        help="Which training script reads this config.",
    )
    base_model: str = knob(
        "",
        label="Base model",
        help=(
            "Hub id or local folder of the chat model to fine-tune (it needs a chat template). "
            "Empty: the student model (RAFTWEB_STUDENT_MODEL, default Qwen/Qwen2.5-0.5B-Instruct)."
        ),
    )
    method: str = knob(
        "lora",
        label="Method",
        choices=METHODS,
        help=(
            "lora: train a small adapter (peft); qlora: the same over a 4-bit base (CUDA and "
            "bitsandbytes only); full: update every weight (most memory)."
        ),
    )
    lora_rank: int = knob(
        64, label="LoRA rank", min=1, max=1024, help="Rank of the adapter matrices (lora, qlora)."
    )
    lora_alpha: int = knob(
        0,
        label="LoRA alpha",
        min=0,
        max=8192,
        advanced=True,
        help="Adapter scaling numerator; 0 means 2 × rank.",
    )
    lora_dropout: float = knob(
        0.05, label="LoRA dropout", min=0.0, max=0.9, advanced=True, help="Dropout on the adapter."
    )
    target_modules: str = knob(
        "all-linear",
        label="Target modules",
        advanced=True,
        help="Modules that get adapters: 'all-linear', or comma-separated names (q_proj,v_proj).",
    )
    learning_rate: float = knob(
        1e-4,
        label="Learning rate",
        min=1e-8,
        max=1e-1,
        help="Peak learning rate (cosine decay after a short warm-up). Full fine-tuning wants ~1e-5.",
    )
    epochs: int = knob(3, label="Epochs", min=1, max=100, help="Passes over the training rows.")
    batch_size: int = knob(
        4, label="Batch size per device", min=1, max=1024, help="Rows per device per micro-step."
    )
    gradient_accumulation: int = knob(
        4,
        label="Gradient accumulation",
        min=1,
        max=1024,
        help="Micro-steps per optimizer step (effective batch = batch size × this × devices).",
    )
    max_seq_length: int = knob(
        0,
        label="Max sequence length",
        min=0,
        max=131072,
        help=(
            f"Tokens per row (prompt + answer); longer rows are left out, never cut. 0: the "
            f"longest row's length, at most {MAX_SEQ_LENGTH_CAP} and the model's maximum."
        ),
    )
    gradient_checkpointing: bool = knob(
        True,
        label="Gradient checkpointing",
        advanced=True,
        help="Recompute activations in the backward pass: much less memory, ~30% slower.",
    )
    bf16: str = knob(
        "auto",
        label="bf16",
        choices=("auto", "on", "off"),
        advanced=True,
        help="bfloat16 mixed precision. auto: on with a CUDA GPU that supports it.",
    )
    packing: bool = knob(
        False,
        label="Packing",
        help=(
            "Pack rows into full-length sequences without padding (best-fit, padding-free; "
            "rows never attend to each other, the loss stays on the answers). Faster on GPUs."
        ),
    )
    group_by_length: bool = knob(
        True,
        label="Group rows by length",
        advanced=True,
        help=(
            "Batch rows of similar length together, so less compute goes to padding (RAFT rows "
            "vary with their documents). Not used with packing, which has no padding."
        ),
    )
    warmup_ratio: float = knob(
        0.03,
        label="Warm-up share",
        min=0.0,
        max=0.5,
        advanced=True,
        help="Share of the steps over which the learning rate rises from zero.",
    )
    eval_share: float = knob(
        0.1,
        label="Eval share",
        min=0.0,
        max=0.5,
        advanced=True,
        help=(
            "Share of the training rows held out for the eval loss when data/eval.jsonl is "
            "empty or missing (rows in data/eval.jsonl are always used when present)."
        ),
    )
    save_steps: int = knob(
        50,
        label="Checkpoint every",
        min=1,
        max=1_000_000,
        advanced=True,
        help="Optimizer steps between checkpoints (and eval-loss measurements).",
    )
    logging_steps: int = knob(
        5, label="Log every", min=1, max=100_000, advanced=True, help="Steps per step event."
    )
    max_steps: int = knob(
        0,
        label="Max steps",
        min=0,
        max=10_000_000,
        advanced=True,
        help="Stop after this many optimizer steps; 0: the epochs decide.",
    )
    seed: int = knob(
        42, label="Seed", min=0, max=2**31 - 1, advanced=True, help="Shuffling and initialisation."
    )
    system_prompt: str = knob(
        "",
        label="System prompt",
        advanced=True,
        help="The persona chat answers with; empty: the default one (train as you serve).",
    )

    @property
    def effective_lora_alpha(self) -> int:
        """``lora_alpha``, where 0 stands for 2 × ``lora_rank`` (the common rsLoRA-free choice)."""
        return self.lora_alpha or 2 * self.lora_rank

    @property
    def target_modules_value(self) -> str | list[str]:
        """``target_modules`` as peft takes it: "all-linear" or a list of module names."""
        text = self.target_modules.strip()
        if text in ("", "all-linear"):
            return "all-linear"
        return [part.strip() for part in text.split(",") if part.strip()]


# Kind -> config class. The embedding script owns its config; both are registered here, so
# the request side (forms, API, resolve_config) finds every kind in one place.
train_configs: Registry[type[TypedConfig]] = Registry("training kind")
train_configs.add(GENERATOR, GeneratorTrainConfig)
train_configs.add("embedding", EmbeddingTrainConfig)


def config_for(kind: str) -> type[TypedConfig]:
    """The config class of ``kind`` (raises :class:`raftweb.registry.UnknownChoice` naming the
    valid kinds)."""
    return train_configs.get(kind)


# --------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    """The recipes on disk: the built-in ones first, then any a user added."""
    found = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    return [n for n in PRESETS if n in found] + [n for n in found if n not in PRESETS]


def load_preset(name: str) -> dict[str, Any]:
    """The recipe ``name`` (a file in ``raftweb/train/recipes/``) as a dict, sections by kind.

    Only names are accepted, never paths: the name comes from forms and the API."""
    name = (name or "").strip()
    valid = ", ".join(preset_names())
    if not _PRESET_NAME.match(name) or not (RECIPES_DIR / f"{name}.yaml").is_file():
        raise PresetError(f"unknown training preset {name!r}; choose one of: {valid}")
    import yaml

    path = RECIPES_DIR / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PresetError(f"training preset {name!r} ({path}) is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PresetError(f"training preset {name!r} ({path}) must be a YAML mapping")
    return data


def preset_values(name: str, kind: str) -> dict[str, Any]:
    """The recipe ``name``'s settings for ``kind`` (YAML's ``on``/``off`` booleans given to a
    text setting such as ``bf16`` are read back as the words)."""
    recipe = load_preset(name)
    section = recipe.get(kind)
    if section is None:
        having = [n for n in preset_names() if kind in load_preset(n)]
        raise PresetError(
            f"training preset {name!r} has no {kind} settings; presets with {kind} "
            f"settings: {', '.join(having) or '(none)'}"
        )
    if not isinstance(section, dict):
        raise PresetError(f"training preset {name!r}: '{kind}' must be a mapping")
    text_fields = {s.name for s in config_for(kind).specs() if s.kind is str}
    return {
        key: ("on" if value else "off") if isinstance(value, bool) and key in text_fields else value
        for key, value in section.items()
    }


def resolve_config(
    kind: str, preset: str | None = None, overrides: Mapping[str, Any] | None = None
) -> TypedConfig:
    """The validated config of ``kind``: defaults, then the preset's section for ``kind``, then
    ``overrides``. Errors (:class:`PresetError`, :class:`ConfigError`, ``UnknownChoice``) name
    what is wrong and what is valid."""
    cls = config_for(kind)
    values: dict[str, Any] = preset_values(preset, kind) if preset else {}
    values.update(dict(overrides or {}))
    values["kind"] = kind
    try:
        return cls.from_dict(values)
    except ConfigError as exc:
        if preset:
            raise ConfigError(f"{exc.message} (preset {preset!r} with overrides)") from None
        raise


__all__ = [
    "GENERATOR",
    "MAX_SEQ_LENGTH_CAP",
    "METHODS",
    "PRESETS",
    "GeneratorTrainConfig",
    "PresetError",
    "config_for",
    "load_preset",
    "preset_names",
    "preset_values",
    "resolve_config",
    "train_configs",
]
