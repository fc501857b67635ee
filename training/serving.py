"""Which generator answers for a knowledge base: the one seam chat and evaluation share.

A *choice* names a generator the way the ``evaluate`` command and the chat page do:

- ``base``: the student model profile as configured, no tuned version;
- ``active``: the KB's active generator version, or the base when none is active;
- ``version:<id>``: one generator version of this KB;
- ``profile:<role>``: any model profile (the teacher, the judge, an external endpoint).

A tuned version reaches the student profile's backend in the form that backend serves it:

- ``hf`` (transformers in this process): the version's base model plus its peft adapter, or
  its full (or merged) weights folder;
- ``openai`` (a vLLM server): the adapter's vLLM name (``<kb-slug>-v<id>``) when adapters are
  loaded at run time (``RAFTWEB_VLLM_RUNTIME_LORA``); otherwise the server serves what it was
  started with (``manage.py vllm_command`` prints that command), so requests name the
  profile's own model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from corpus.models import KnowledgeBase
from raftweb.core.services import profile_spec
from raftweb.errors import Invalid, NotFound
from raftweb.llm import get_backend
from raftweb.llm.base import ChatBackend, ModelSpec
from raftweb.llm.catalog import CHAT_ROLES, STUDENT
from training.lora_serving import adapter_name, runtime_lora_enabled
from training.models import ModelKind, ModelVersion
from training.selectors import active_version

BASE = "base"
ACTIVE = "active"
VERSION_PREFIX = "version:"
PROFILE_PREFIX = "profile:"
CHOICES_HELP = "base, active, version:<id> or profile:<role>"


@dataclass(frozen=True, slots=True)
class Generator:
    """A generator ready to answer: the backend, the model name requests send, and what to
    record as the answer's model version."""

    backend: ChatBackend
    spec: ModelSpec
    model_name: str
    label: str
    version_id: int | None


def generator_for(kb: KnowledgeBase, choice: str = ACTIVE) -> Generator:
    """The generator ``choice`` names for ``kb`` (see the module docstring).

    Raises :class:`~raftweb.errors.Invalid` for a choice that is not one of the forms above or
    names an unknown profile, :class:`~raftweb.errors.NotFound` for a version that is not a
    generator version of ``kb``.
    """
    spec, label, version_id = generator_spec(kb, choice)
    return Generator(
        backend=get_backend(spec),
        spec=spec,
        model_name=spec.model,
        label=label,
        version_id=version_id,
    )


def generator_spec(kb: KnowledgeBase, choice: str = ACTIVE) -> tuple[ModelSpec, str, int | None]:
    """The model spec, label and version id of ``choice`` (no backend is built)."""
    choice = (choice or ACTIVE).strip()
    if choice == BASE:
        return _base(), BASE, None
    if choice == ACTIVE:
        version = active_version(kb=kb, kind=ModelKind.GENERATOR)
        return (_base(), BASE, None) if version is None else _of_version(version)
    if choice.startswith(VERSION_PREFIX):
        return _of_version(_version(kb, choice.removeprefix(VERSION_PREFIX)))
    if choice.startswith(PROFILE_PREFIX):
        role = choice.removeprefix(PROFILE_PREFIX)
        if role not in CHAT_ROLES:
            raise Invalid(
                f"Unknown model profile {role!r} in {choice!r}; choose one of: {', '.join(CHAT_ROLES)}."
            )
        return profile_spec(role), choice, None
    raise Invalid(f"Unknown generator {choice!r}; use {CHOICES_HELP}.")


def _base() -> ModelSpec:
    return profile_spec(STUDENT)


def _version(kb: KnowledgeBase, ident: str) -> ModelVersion:
    if not ident.isdigit():
        raise Invalid(f"A generator version is named by its id: version:<id>, not {ident!r}.")
    version = ModelVersion.objects.filter(kb=kb, kind=ModelKind.GENERATOR, pk=int(ident)).first()
    if version is None:
        raise NotFound(f"Knowledge base {kb.slug!r} has no generator version {ident}.")
    return version


def _of_version(version: ModelVersion) -> tuple[ModelSpec, str, int | None]:
    base = _base()
    spec = _version_spec(base, version)
    # A server that cannot be told to use the version answers with the base: say so.
    return (spec, version.label, version.pk) if spec != base else (base, BASE, None)


def _version_spec(base: ModelSpec, version: ModelVersion) -> ModelSpec:
    setting = f"generator version {version.label!r} (id {version.pk}) of {version.kb.slug!r}"
    if base.backend == "hf":
        if version.merged_path:
            return replace(base, model=version.merged_path, adapter_path="", setting=setting)
        if version.is_adapter:
            model = version.base_model or base.model
            return replace(base, model=model, adapter_path=version.path, setting=setting)
        return replace(base, model=version.path, adapter_path="", setting=setting)
    if base.backend == "openai" and version.is_adapter and runtime_lora_enabled():
        return replace(base, model=adapter_name(version), setting=setting)
    # The server serves what it was started with (see the module docstring).
    return base
