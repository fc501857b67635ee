"""The Django and API faces of a typed config (:mod:`raftweb.typedconfig`): an HTML form class
and a ninja schema, both generated from the one dataclass, so the page, the API and the CLI
offer the same knobs with the same bounds, labels and help."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from django import forms
from pydantic import BaseModel, ConfigDict, Field, create_model

from raftweb.typedconfig import ConfigError, FieldSpec, TypedConfig

# Words a field name spells in lower case that people read differently (acronyms, units).
_WORDS = {
    "url": "URL",
    "urls": "URLs",
    "api": "API",
    "id": "ID",
    "ids": "IDs",
    "llm": "LLM",
    "lora": "LoRA",
    "bm25": "BM25",
    "gpu": "GPU",
    "cpu": "CPU",
    "json": "JSON",
}
_UNITS = {"s": "(s)", "ms": "(ms)", "mb": "(MB)", "gb": "(GB)", "pct": "(%)"}


def field_label(name: str) -> str:
    """A readable label for a snake_case field name: ``base_url`` → "Base URL", ``api_key`` →
    "API key", ``timeout_s`` → "Timeout (s)" (not Django's "Base url", "Api key", "Timeout s")."""
    words = [w for w in name.split("_") if w]
    if not words:
        return name
    out = [_WORDS.get(w.lower(), w) for w in words]
    if len(words) > 1 and words[-1].lower() in _UNITS:
        out[-1] = _UNITS[words[-1].lower()]
    first = out[0]
    out[0] = first if first.isupper() or first in _WORDS.values() else first.capitalize()
    return " ".join(out)


def _form_field(spec: FieldSpec) -> forms.Field:
    k = spec.knob
    common: dict[str, Any] = {
        "label": k.label or field_label(spec.name),
        "help_text": k.help,
        "required": False,
        "initial": None if spec.default == () else spec.default,
    }
    if k.choices:
        return forms.ChoiceField(choices=[(c, c) for c in k.choices], **common)
    if spec.kind is bool:
        return forms.BooleanField(**common)
    if spec.kind is int:
        return forms.IntegerField(min_value=k.min, max_value=k.max, **common)
    if spec.kind is float:
        return forms.FloatField(min_value=k.min, max_value=k.max, step_size=None, **common)
    if spec.kind is tuple:
        common["initial"] = ", ".join(str(x) for x in spec.default or ())
        return forms.CharField(**common)
    return forms.CharField(**common)


class ConfigForm(forms.Form):
    """Base of generated config forms: :meth:`config` gives the validated settings dict."""

    config_class: type[TypedConfig]

    def config(self) -> dict[str, Any]:
        """Only the fields the form offers, validated by the config itself."""
        values: dict[str, Any] = {}
        for spec in self.config_class.specs():
            if spec.name not in self.cleaned_data:
                continue
            value = self.cleaned_data[spec.name]
            if value is None or (value == "" and spec.kind is not str):
                if spec.optional:
                    values[spec.name] = None
                continue
            values[spec.name] = value
        try:
            return self.config_class.from_dict(values).to_dict()
        except ConfigError as exc:
            raise forms.ValidationError(exc.message) from None

    def advanced_fields(self) -> list[forms.BoundField]:
        return [
            self[s.name]
            for s in self.config_class.specs()
            if s.name in self.fields and s.knob.advanced
        ]

    def basic_fields(self) -> list[forms.BoundField]:
        names = {s.name for s in self.config_class.specs() if s.knob.advanced}
        return [self[n] for n in self.fields if n not in names]


def config_form(
    config: type[TypedConfig], *, base: type[forms.Form] = forms.Form, exclude: Sequence[str] = ()
) -> type[ConfigForm]:
    """A form class with one field per offered config field (in declaration order), after the
    fields of ``base`` (such as the knowledge-base picker)."""
    attrs: dict[str, Any] = {"config_class": config}
    for spec in config.specs():
        if spec.knob.form and spec.name not in exclude:
            attrs[spec.name] = _form_field(spec)
    bases = (ConfigForm,) if base is forms.Form else (base, ConfigForm)
    return type(f"{config.__name__}Form", bases, attrs)


@cache
def config_schema(config: type[TypedConfig]) -> type[BaseModel]:
    """A ninja schema for the API docs: every field optional (omitted = the config's default),
    typed, with the config's bounds, choices and help. Values are validated by the config
    itself (:meth:`TypedConfig.from_dict`) so the API answers bad settings exactly like the
    form and the CLI do (400, naming the field), not with a second set of rules."""
    fields: dict[str, Any] = {}
    for spec in config.specs():
        k = spec.knob
        py: Any = {tuple: list[int]}.get(spec.kind, spec.kind)
        doc: dict[str, Any] = {}
        if k.min is not None:
            doc["minimum"] = k.min
        if k.max is not None:
            doc["maximum"] = k.max
        if k.choices:
            doc["enum"] = list(k.choices)
        default = list(spec.default) if spec.kind is tuple else spec.default
        fields[spec.name] = (
            py | None,
            Field(
                default=default,
                title=spec.knob.label or field_label(spec.name),
                description=k.help or None,
                json_schema_extra=doc or None,
            ),
        )
    return create_model(f"{config.__name__}In", __base__=_OpenSchema, **fields)  # type: ignore[call-overload,no-any-return]


class _OpenSchema(BaseModel):
    # Unknown keys reach the config, which names them in its 400 ("unknown ... setting(s)").
    model_config = ConfigDict(extra="allow")


def config_values(payload: BaseModel) -> dict[str, Any]:
    """The settings a client actually sent (unknown keys included, for the config to refuse)."""
    return payload.model_dump(exclude_unset=True) | dict(payload.model_extra or {})
