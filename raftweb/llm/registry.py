"""Backends by name: a :class:`raftweb.registry.Registry`, not an if-chain.

A backend module registers its class with :func:`register_backend`; callers ask
:func:`get_backend` for an instance. Instances are cached per spec so that, for example, an
in-process HF model is loaded once per process however many callers use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from raftweb.registry import Registry, UnknownChoice

from .base import ChatBackend, ModelSpec, UnknownBackend

B = TypeVar("B", bound=type[ChatBackend])

# Backend classes by name. Built-in backends live in their own modules; importing them registers
# them. They are imported lazily so that `import raftweb.llm` stays cheap (no torch, no HTTP
# client) while still being listed as choices.
backends: Registry[type[ChatBackend]] = Registry("backend")
backends.add_lazy("openai", "raftweb.llm.openai_backend")
backends.add_lazy("hf", "raftweb.llm.hf_backend")

_INSTANCES: dict[tuple[object, ...], ChatBackend] = {}
_LOCK = threading.Lock()


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator: make ``cls`` available as backend ``name`` (and set ``cls.name``).

    A name already taken by another class raises ``ValueError``.
    """

    def decorator(cls: B) -> B:
        backends.add(name, cls)
        cls.name = name
        return cls

    return decorator


def unregister_backend(name: str) -> None:
    """Remove a backend (tests and plugins that come and go); cached instances are dropped too."""
    with _LOCK:
        backends.remove(name)
        for key in [k for k in _INSTANCES if k[0] == name]:
            del _INSTANCES[key]


def available_backends() -> list[str]:
    """Names of every backend that can be used (built-in ones included), sorted."""
    return sorted(backends.names())


def backend_class(name: str, *, setting: str = "model profile") -> type[ChatBackend]:
    """The class registered as backend ``name`` (importing a built-in one on first use).

    An unknown name raises :class:`UnknownBackend` (an :class:`UnknownChoice`) naming
    ``setting`` and the valid backends.
    """
    try:
        return backends.get(name, setting=setting)
    except UnknownChoice as exc:
        raise UnknownBackend(name, exc.choices, setting=setting) from None


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
