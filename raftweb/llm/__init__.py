"""Model backends behind one interface (engine: never imports Django).

    from raftweb.llm import ChatMessage, ModelSpec, get_backend

    backend = get_backend(ModelSpec(backend="hf", model="/models/tiny"))
    completion = await backend.complete([ChatMessage("user", "Hi")])
    async for event in backend.stream([ChatMessage("user", "Hi")]):
        ...

Backends: ``openai`` (OpenAI-compatible HTTP server) and ``hf`` (in-process transformers);
more can be added with :func:`register_backend`.
"""

from __future__ import annotations

from .base import (
    BackendHealth,
    BackendUnavailable,
    BadRequest,
    ChatBackend,
    ChatMessage,
    Completion,
    GenerationParams,
    LLMError,
    ModelNotFound,
    ModelSpec,
    ModelUnreachable,
    ProgressCallback,
    Role,
    StreamEvent,
    UnknownBackend,
    Usage,
)
from .batch import complete_many
from .limiter import FairLimiter, QueueCallback
from .registry import (
    available_backends,
    backend_class,
    backends,
    clear_backends,
    forget_backend,
    get_backend,
    register_backend,
    unregister_backend,
)

__all__ = [
    "BackendHealth",
    "BackendUnavailable",
    "BadRequest",
    "ChatBackend",
    "ChatMessage",
    "Completion",
    "FairLimiter",
    "GenerationParams",
    "LLMError",
    "ModelNotFound",
    "ModelUnreachable",
    "ModelSpec",
    "ProgressCallback",
    "QueueCallback",
    "Role",
    "StreamEvent",
    "UnknownBackend",
    "Usage",
    "available_backends",
    "backend_class",
    "backends",
    "clear_backends",
    "complete_many",
    "forget_backend",
    "get_backend",
    "register_backend",
    "unregister_backend",
]
