from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from raftweb.llm import (
    BackendHealth,
    ChatBackend,
    ChatMessage,
    Completion,
    GenerationParams,
    ModelSpec,
    StreamEvent,
    UnknownBackend,
    Usage,
    available_backends,
    backend_class,
    backends,
    get_backend,
    register_backend,
    unregister_backend,
)
from raftweb.llm.hf_backend import HFBackend
from raftweb.llm.openai_backend import OpenAIBackend
from raftweb.registry import Registry, UnknownChoice


class ReverseBackend(ChatBackend):
    """A complete, tiny backend: answers with the last message reversed."""

    async def complete(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Completion:
        text = messages[-1].content[::-1]
        return Completion(
            text=text, usage=Usage(1, len(text)), latency_s=0.0, model=self.spec.model
        )

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        for char in messages[-1].content[::-1]:
            yield StreamEvent(delta=char)
        yield StreamEvent(done=True, usage=Usage(1, len(messages[-1].content)))

    async def health(self) -> BackendHealth:
        return BackendHealth(True, "always")


@pytest.fixture
def reverse_backend() -> Iterator[str]:
    register_backend("test-reverse")(ReverseBackend)
    yield "test-reverse"
    unregister_backend("test-reverse")


def test_it_lists_the_builtin_backends() -> None:
    assert {"hf", "openai"} <= set(available_backends())


def test_it_builds_builtin_backends_by_name() -> None:
    assert isinstance(get_backend(ModelSpec(backend="hf", model="/nowhere/at/all")), HFBackend)
    openai_spec = ModelSpec(backend="openai", model="m", base_url="http://127.0.0.1:9/v1")
    assert isinstance(get_backend(openai_spec), OpenAIBackend)


def test_it_names_valid_backends_and_the_setting_for_an_unknown_one() -> None:
    spec = ModelSpec(backend="gpt-magic", model="x", setting="model profile 'judge'")
    with pytest.raises(UnknownBackend) as info:
        get_backend(spec)
    message = str(info.value)
    assert "'gpt-magic'" in message
    assert "model profile 'judge'" in message
    assert "'hf'" in message and "'openai'" in message


def test_an_unknown_backend_is_the_registrys_unknown_choice_with_the_profile_message() -> None:
    with pytest.raises(UnknownChoice) as info:
        backend_class("gpt-magic", setting="model profile 'judge'")
    error = info.value
    assert isinstance(error, UnknownBackend) and isinstance(error, LookupError)
    assert str(error) == (
        "Unknown model backend 'gpt-magic' in model profile 'judge'. "
        "Valid backends: " + ", ".join(repr(n) for n in available_backends()) + "."
    )
    assert (error.kind, error.name, error.setting) == (
        "backend",
        "gpt-magic",
        "model profile 'judge'",
    )
    assert error.choices == available_backends()
    # Errors travel back from worker processes.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is UnknownBackend and str(copy) == str(error)


def test_backends_live_in_the_shared_registry_with_lazy_builtins() -> None:
    assert isinstance(backends, Registry) and backends.kind == "backend"
    assert {"hf", "openai"} <= set(backends.names())
    assert backend_class("hf") is HFBackend is backends.get("hf")
    assert backend_class("openai") is OpenAIBackend


def test_it_caches_one_instance_per_spec() -> None:
    spec = ModelSpec(backend="hf", model="/models/a", setting="model profile 'teacher'")
    same_model_other_setting = dataclasses.replace(spec, setting="model profile 'judge'")
    other_model = dataclasses.replace(spec, model="/models/b")
    with_extra = dataclasses.replace(spec, extra={"x": [1, 2]})

    first = get_backend(spec)
    assert get_backend(dataclasses.replace(spec)) is first
    # One model configured for two roles is still loaded only once.
    assert get_backend(same_model_other_setting) is first
    assert get_backend(other_model) is not first
    assert get_backend(with_extra) is not first
    assert get_backend(dataclasses.replace(with_extra, extra={"x": [1, 2]})) is get_backend(
        with_extra
    )


async def test_it_uses_a_registered_backend(reverse_backend: str) -> None:
    assert reverse_backend in available_backends()
    assert backends.get(reverse_backend) is ReverseBackend
    backend = get_backend(ModelSpec(backend=reverse_backend, model="rev"))
    assert backend.name == reverse_backend
    completion = await backend.complete([ChatMessage("user", "abc")])
    assert completion.text == "cba"
    pieces = [event.delta async for event in backend.stream([ChatMessage("user", "abc")])]
    assert "".join(pieces) == "cba"


def test_it_refuses_to_register_two_classes_under_one_name(reverse_backend: str) -> None:
    class Other(ReverseBackend):
        pass

    with pytest.raises(ValueError, match="already taken"):
        register_backend(reverse_backend)(Other)


def test_it_forgets_an_unregistered_backend(reverse_backend: str) -> None:
    unregister_backend(reverse_backend)
    assert reverse_backend not in available_backends()
    with pytest.raises(UnknownBackend):
        get_backend(ModelSpec(backend=reverse_backend, model="rev"))


def test_it_imports_the_llm_engine_without_django_or_torch() -> None:
    code = (
        "import sys\n"
        "import raftweb.llm, raftweb.llm.catalog, raftweb.llm.batch\n"
        "assert 'django' not in sys.modules, 'django imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
        "import raftweb.llm.hf_backend, raftweb.llm.openai_backend\n"
        "assert 'django' not in sys.modules, 'django imported by a backend'\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
