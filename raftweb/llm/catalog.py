"""The model roles and their default model specs, optionally overridden by environment.

Profiles themselves are stored in the database (the ``core`` app); this module only knows the
role names, the built-in defaults, and how ``RAFTWEB_<ROLE>_*`` variables change them, so
that settings, the profile seeding and the engine agree on one source of defaults.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from urllib.parse import urlparse

from .base import ModelSpec
from .registry import available_backends

TEACHER = "teacher"
JUDGE = "judge"
STUDENT = "student"
EMBEDDING = "embedding"
ROLES: tuple[str, ...] = (TEACHER, JUDGE, STUDENT, EMBEDDING)
CHAT_ROLES: tuple[str, ...] = (TEACHER, JUDGE, STUDENT)

DEFAULT_CHAT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
# The embedding side is implemented in raftweb.retrieval; these are the backend names it uses.
EMBEDDING_BACKENDS: tuple[str, ...] = ("sentence-transformers",)

ENV_FIELDS: tuple[str, ...] = ("BACKEND", "MODEL", "BASE_URL", "API_KEY", "ADAPTER")


def env_name(role: str, field: str) -> str:
    return f"RAFTWEB_{role.upper()}_{field}"


def profile_setting(role: str) -> str:
    return f"model profile '{role}'"


def default_spec(role: str) -> ModelSpec:
    if role not in ROLES:
        raise ValueError(f"Unknown model role {role!r}; valid roles: {', '.join(ROLES)}.")
    if role == EMBEDDING:
        return ModelSpec(
            backend="sentence-transformers",
            model=DEFAULT_EMBEDDING_MODEL,
            setting=profile_setting(role),
        )
    return ModelSpec(backend="hf", model=DEFAULT_CHAT_MODEL, setting=profile_setting(role))


def _valid_backends(role: str) -> tuple[str, ...]:
    return EMBEDDING_BACKENDS if role == EMBEDDING else tuple(available_backends())


def spec_from_env(role: str, environ: Mapping[str, str] | None = None) -> ModelSpec:
    """The default spec for ``role`` with ``RAFTWEB_<ROLE>_*`` overrides applied and checked."""
    env = os.environ if environ is None else environ
    spec = default_spec(role)

    def read(field: str) -> str | None:
        value = env.get(env_name(role, field))
        # An empty variable (as .env files often have) means "not set".
        return value.strip() if value is not None and value.strip() else None

    backend = read("BACKEND") or spec.backend
    valid = _valid_backends(role)
    if backend not in valid:
        raise ValueError(
            f"{env_name(role, 'BACKEND')}={backend!r} is not a valid backend for the {role} role; "
            f"use one of: {', '.join(valid)}."
        )
    model = read("MODEL") or spec.model
    base_url = read("BASE_URL") or ""
    if base_url:
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"{env_name(role, 'BASE_URL')}={base_url!r} is not an http(s) URL "
                f"(expected e.g. http://127.0.0.1:8001/v1)."
            )
    if backend == "openai" and not base_url:
        raise ValueError(
            f"{env_name(role, 'BACKEND')}=openai needs {env_name(role, 'BASE_URL')} "
            f"(e.g. http://127.0.0.1:8001/v1 for a local vLLM server)."
        )
    adapter = read("ADAPTER") or ""
    if adapter and backend != "hf":
        raise ValueError(
            f"{env_name(role, 'ADAPTER')} only applies to the 'hf' backend; with {backend!r}, "
            f"serve the adapter on the server (e.g. vLLM --lora-modules) and name it in "
            f"{env_name(role, 'MODEL')}."
        )
    return dataclasses.replace(
        spec,
        backend=backend,
        model=model,
        base_url=base_url,
        api_key=read("API_KEY") or "",
        adapter_path=adapter,
    )


def default_specs_from_env(environ: Mapping[str, str] | None = None) -> dict[str, ModelSpec]:
    """One spec per role (``ROLES`` order), from defaults + ``RAFTWEB_<ROLE>_*`` variables.

    Raises ``ValueError`` with a message naming the variable on any bad value.
    """
    return {role: spec_from_env(role, environ) for role in ROLES}
