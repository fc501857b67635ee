"""The one interface every model backend implements.

Engine module: never imports Django. Callers (services, consumers, jobs) build a
:class:`ModelSpec` from a stored model profile and ask :func:`raftweb.llm.get_backend`
for a backend; they only ever see these types and these errors.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from raftweb.registry import UnknownChoice

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything a backend needs to talk to one model.

    ``setting`` names where the value came from (e.g. ``"model profile 'teacher'"`` or
    ``RAFTWEB_TEACHER_MODEL``) so that errors can tell the user what to change.
    """

    backend: str
    model: str
    base_url: str = ""
    api_key: str = ""
    adapter_path: str = ""
    timeout_s: float = 120.0
    max_retries: int = 3
    max_concurrency: int = 8
    device: str = "auto"
    setting: str = "model profile"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 800
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    usage: Usage
    latency_s: float
    model: str
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One piece of a streamed completion.

    Text pieces carry ``delta``; the last event has ``done=True`` and carries the usage,
    the finish reason and the whole latency.
    """

    delta: str = ""
    done: bool = False
    usage: Usage | None = None
    finish_reason: str | None = None
    latency_s: float | None = None


@dataclass(frozen=True, slots=True)
class BackendHealth:
    ok: bool
    detail: str


class LLMError(Exception):
    """Base of every model-backend error; ``str()`` is a message fit for a user."""


class ModelNotFound(LLMError):
    """The configured model cannot be found; the message names the setting to change."""


class BackendUnavailable(LLMError):
    """The model server could not be reached or kept failing (after retries)."""


class ModelUnreachable(ModelNotFound, BackendUnavailable):
    """A model that is neither here nor fetchable (a hub id with no hub reachable): not found
    where it was looked for, and unavailable until the setting or the network changes, so
    chat answers it at once, as the 503 it is."""


class BadRequest(LLMError):
    """The server refused the request (a 4xx other than 429); retrying will not help."""


class UnknownBackend(LLMError, UnknownChoice):
    """A backend name that is not registered.

    Both an :class:`LLMError` (what model callers catch) and the registry's
    :class:`~raftweb.registry.UnknownChoice` (so a ``LookupError``), with the message the
    model pages have always shown: it names the setting to change and the valid backends.
    """

    def __init__(self, name: str, choices: list[str], setting: str = "model profile") -> None:
        UnknownChoice.__init__(self, "backend", name, choices, setting=setting)
        valid = ", ".join(repr(c) for c in choices)
        self.message = f"Unknown model backend {name!r} in {setting}. Valid backends: {valid}."
        self.args = (self.message,)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.name, self.choices, self.setting))


class ChatBackend(abc.ABC):
    """A chat-completion model. Implementations must be safe to share between tasks."""

    name: str = ""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    async def complete(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Completion: ...

    @abc.abstractmethod
    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> AsyncIterator[StreamEvent]: ...

    @abc.abstractmethod
    async def health(self) -> BackendHealth: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        return None


def monotonic() -> float:
    return time.perf_counter()


ProgressCallback = Callable[[int, int], Awaitable[None] | None]
