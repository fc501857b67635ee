"""Backends by name: a registry, not an if-chain.

A backend module registers its class with :func:`register_backend`; callers ask
:func:`get_backend` for an instance. Instances are cached per spec so that, for example, an
in-process HF model is loaded once per process however many callers use it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import TypeVar

from .base import ChatBackend, ModelSpec, UnknownBackend

B = TypeVar("B", bound=type[ChatBackend])

_REGISTRY: dict[str, type[ChatBackend]] = {}
_INSTANCES: dict[tuple[object, ...], ChatBackend] = {}
_LOCK = threading.Lock()

# Built-in backends live in their own modules; importing them registers them. They are
# imported lazily so that `import raftweb.llm` stays cheap (no torch, no HTTP client).
_BUILTIN_MODULES: dict[str, str] = {
    "openai": "raftweb.llm.openai_backend",
    "hf": "raftweb.llm.hf_backend",
}


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator: make ``cls`` available as backend ``name``."""

    def decorator(cls: B) -> B:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"Backend name {name!r} is already taken by {existing.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def unregister_backend(name: str) -> None:
    """Remove a backend (tests and plugins that come and go); cached instances are dropped too."""
    with _LOCK:
        _REGISTRY.pop(name, None)
        for key in [k for k in _INSTANCES if k[0] == name]:
            del _INSTANCES[key]


def available_backends() -> list[str]:
    """Names of every backend that can be used (built-in ones included), sorted."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def backend_class(name: str, *, setting: str = "model profile") -> type[ChatBackend]:
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(repr(n) for n in available_backends())
        raise UnknownBackend(
            f"Unknown model backend {name!r} in {setting}. Valid backends: {valid}."
        ) from None


def spec_key(spec: ModelSpec) -> tuple[object, ...]:
    """A hashable identity for a spec (``extra`` is a dict, so the dataclass is not hashable)."""
    extra = tuple(sorted((k, repr(v)) for k, v in spec.extra.items()))
    return (
        spec.backend,
        spec.model,
        spec.base_url,
        spec.api_key,
        spec.adapter_path,
        spec.timeout_s,
        spec.max_retries,
        spec.max_concurrency,
        spec.device,
        extra,
    )


def get_backend(spec: ModelSpec) -> ChatBackend:
    """The (shared, cached) backend instance for ``spec``.

    ``spec.setting`` is deliberately not part of the cache key: the same model configured
    through two settings is still one loaded model.
    """
    key = spec_key(spec)
    with _LOCK:
        backend = _INSTANCES.get(key)
        if backend is None:
            backend = backend_class(spec.backend, setting=spec.setting)(spec)
            _INSTANCES[key] = backend
        return backend


def forget_backend(spec: ModelSpec) -> ChatBackend | None:
    """Drop a cached instance (e.g. after a profile is edited); returns it so it can be closed."""
    with _LOCK:
        return _INSTANCES.pop(spec_key(spec), None)


def clear_backends() -> list[ChatBackend]:
    """Drop every cached instance (tests, reloads); returns them so callers can ``aclose()``."""
    with _LOCK:
        dropped = list(_INSTANCES.values())
        _INSTANCES.clear()
        return dropped
