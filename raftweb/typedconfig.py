"""Typed configs: one dataclass per config, whose fields carry bounds, labels and help.

A job's knobs used to be declared three times (a dataclass, a Django form, CLI flags) plus an
untyped ``config: dict`` in the API, and the copies drifted. Now a config is declared once::

    @dataclass(frozen=True)
    class GenerationConfig(TypedConfig):
        p: float = knob(0.8, label="p (oracle in context)", min=0.0, max=1.0, help="...")

and everything else is generated from it: validation (:meth:`TypedConfig.from_dict`), CLI flags
(:func:`add_arguments` / :func:`values_from_args`), the HTML form
(:func:`raftweb.core.typedforms.config_form`) and the API schema
(:func:`raftweb.core.typedforms.config_schema`). This module is engine code: no Django.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Self

from raftweb.errors import Invalid

_TRUE = {"1", "true", "on", "yes", "y"}
_FALSE = {"0", "false", "off", "no", "n", ""}


class ConfigError(Invalid):
    """A config value that is unknown, of the wrong type or out of bounds."""


@dataclass(frozen=True, slots=True)
class Knob:
    """What a config field means to people and to validation."""

    label: str = ""
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    cli: tuple[str, ...] = ()  # extra flag names kept for compatibility ("--distractors")
    cli_false: str = ""  # a flag that sets a boolean to False ("--no-judge")
    advanced: bool = False  # shown folded away in forms
    form: bool = True  # offered in the HTML form


def knob(
    default: Any,
    *,
    label: str = "",
    help: str = "",  # noqa: A002 - the natural name for the help text
    min: float | None = None,  # noqa: A002
    max: float | None = None,  # noqa: A002
    choices: Sequence[str] = (),
    cli: Sequence[str] = (),
    cli_false: str = "",
    advanced: bool = False,
    form: bool = True,
) -> Any:
    """A dataclass field with its :class:`Knob`; mutable defaults become factories."""
    meta = {
        "knob": Knob(
            label=label,
            help=help,
            min=min,
            max=max,
            choices=tuple(choices),
            cli=tuple(cli),
            cli_false=cli_false,
            advanced=advanced,
            form=form,
        )
    }
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A config field as the generators see it."""

    name: str
    kind: type  # bool, int, float, str, or tuple (a tuple of ints)
    optional: bool  # None is allowed
    default: Any
    knob: Knob

    @property
    def label(self) -> str:
        return self.knob.label or self.name.replace("_", " ").capitalize()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _kind(annotation: Any) -> tuple[type, bool]:
    """(base type, optional) from a resolved annotation such as ``int | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        base, _ = _kind(args[0])
        return base, True
    if origin in (tuple, list):
        return tuple, False
    if annotation in (bool, int, float, str):
        return annotation, False
    raise TypeError(f"unsupported config field type {annotation!r}")


class TypedConfig:
    """Mixin for frozen dataclass configs: validation from untrusted input, round-tripping."""

    _specs_cache: ClassVar[dict[type, tuple[FieldSpec, ...]]] = {}
    # How errors name this config's fields ("unknown generation setting(s): ...").
    setting_noun: ClassVar[str] = "setting"

    @classmethod
    def specs(cls) -> tuple[FieldSpec, ...]:
        cached = TypedConfig._specs_cache.get(cls)
        if cached is None:
            hints = typing.get_type_hints(cls)
            out = []
            for f in fields(cls):  # type: ignore[arg-type]
                kind, optional = _kind(hints[f.name])
                default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
                out.append(
                    FieldSpec(f.name, kind, optional, default, f.metadata.get("knob", Knob()))
                )
            cached = TypedConfig._specs_cache[cls] = tuple(out)
        return cached

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Self:
        """Build from user input (JSON, form data, CLI); unknown keys and bad values raise
        :class:`ConfigError` naming the field and what it accepts."""
        data = dict(data or {})
        specs = {s.name: s for s in cls.specs()}
        unknown = sorted(set(data) - set(specs))
        if unknown:
            raise ConfigError(
                f"unknown {cls.setting_noun}(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(specs))}"
            )
        values = {name: coerce(specs[name], raw) for name, raw in data.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples become lists)."""
        out: dict[str, Any] = {}
        for s in self.specs():
            value = getattr(self, s.name)
            out[s.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> Self:
        return type(self).from_dict(self.to_dict() | changes)


def coerce(spec: FieldSpec, raw: Any) -> Any:
    """One field's value from untrusted input, or :class:`ConfigError`."""
    if raw is None or (raw == "" and spec.optional):
        if spec.optional:
            return None
        return spec.default
    try:
        value = _convert(spec.kind, raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{spec.name}: {raw!r} is not a valid {spec.kind.__name__}") from None
    k = spec.knob
    if k.choices and value not in k.choices:
        raise ConfigError(f"{spec.name} must be one of {', '.join(k.choices)}")
    if spec.kind in (int, float):
        low, high = k.min, k.max
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                raise ConfigError(f"{spec.name} must be between {low:g} and {high:g}")
            if low is not None:
                raise ConfigError(f"{spec.name} must be at least {low:g}")
            raise ConfigError(f"{spec.name} must be at most {high:g}")
    return value


def _convert(kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(raw)
    if kind is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(raw)
        return int(raw)
    if kind is float:
        if isinstance(raw, bool):
            raise ValueError(raw)
        return float(raw)
    if kind is tuple:
        if isinstance(raw, str):
            raw = [x for x in raw.replace(" ", "").split(",") if x]
        return tuple(int(x) for x in raw)
    return str(raw)


# ------------------------------------------------------------------------------------- CLI


def add_arguments(
    parser: argparse.ArgumentParser, config: type[TypedConfig], *, skip: Sequence[str] = ()
) -> None:
    """One flag per field (``--questions-per-chunk``), plus the knob's compatibility names.
    Every flag defaults to "not given", so only what the user typed overrides the config."""
    group = parser.add_argument_group(f"{config.__name__} settings")
    for s in config.specs():
        if s.name in skip:
            continue
        help_text = s.knob.help or s.label
        default_text = f"default {s.default!r}" if s.default not in (None, ()) else ""
        full_help = f"{help_text} ({default_text})" if default_text else help_text
        names = [s.flag, *s.knob.cli]
        if s.kind is bool:
            group.add_argument(
                *names,
                dest=f"cfg_{s.name}",
                action=argparse.BooleanOptionalAction,
                default=None,
                help=full_help,
            )
            if s.knob.cli_false:
                group.add_argument(
                    s.knob.cli_false,
                    dest=f"cfg_{s.name}",
                    action="store_false",
                    help=f"same as --no-{s.flag[2:]}",
                )
        else:
            group.add_argument(
                *names,
                dest=f"cfg_{s.name}",
                default=None,
                metavar=s.kind.__name__.upper() if s.kind is not tuple else "ID,ID",
                choices=list(s.knob.choices) or None,
                help=full_help,
            )


def values_from_args(config: type[TypedConfig], options: Mapping[str, Any]) -> dict[str, Any]:
    """The settings given on the command line (parsed ``options`` from :func:`add_arguments`)."""
    return {
        s.name: options[f"cfg_{s.name}"]
        for s in config.specs()
        if options.get(f"cfg_{s.name}") is not None
    }
