"""Runtime LoRA on a vLLM student server: activating a generator adapter loads it through
``/v1/load_lora_adapter`` and then unloads the one it replaces; chat names the active adapter.
The server is a real HTTP server on loopback that records what it receives."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from raftweb.core.models import ModelProfile
from raftweb.core.services import profile_get
from raftweb.errors import Unavailable, UpstreamError
from training.models import ModelVersion
from training.selectors import active_version
from training.services import model_version_activate
from training.serving import generator_spec

pytestmark = pytest.mark.django_db


class FakeVLLM:
    """Records ``(path, json body, Authorization)``; answers from ``replies`` (path -> list of
    ``(status, body)`` taken in turn), 200 "Success" when none is left."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any, str]] = []
        self.replies: dict[str, list[tuple[int, Any]]] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.received.append(
                    (self.path, json.loads(raw), self.headers.get("Authorization", ""))
                )
                queue = owner.replies.get(self.path) or []
                status, body = queue.pop(0) if queue else (200, "Success: done.")
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def vllm() -> Iterator[FakeVLLM]:
    server = FakeVLLM()
    yield server
    server.close()


def _student(base_url: str, backend: str = "openai") -> None:
    profile_get("student")
    ModelProfile.objects.filter(role="student").update(
        backend=backend, model="org/base", base_url=base_url, api_key="sk-test"
    )


@pytest.fixture
def runtime_lora(settings: Any, vllm: FakeVLLM) -> FakeVLLM:
    settings.RAFTWEB_VLLM_RUNTIME_LORA = True
    _student(vllm.url)
    return vllm


@pytest.fixture
def adapter(tv_kb: Any, tmp_path: Path) -> Callable[[str], ModelVersion]:
    def make(label: str) -> ModelVersion:
        path = tmp_path / label
        path.mkdir()
        return ModelVersion.objects.create(
            kb=tv_kb, kind="generator", label=label, path=str(path), is_adapter=True
        )

    return make


AUTH = "Bearer sk-test"


def chat_model_name(kb: Any) -> str | None:
    """The model chat requests for ``kb`` name; None: the student profile's own model."""
    spec, _label, _version = generator_spec(kb)
    return None if spec.model == "org/base" else spec.model


def test_it_loads_the_new_adapter_then_unloads_the_old_one(
    tv_kb: Any, runtime_lora: FakeVLLM, adapter: Callable[[str], ModelVersion]
) -> None:
    first, second = adapter("first"), adapter("second")
    assert chat_model_name(tv_kb) is None  # the base model: the profile's own name

    assert model_version_activate(version=first) is True
    assert runtime_lora.received == [
        ("/v1/load_lora_adapter", {"lora_name": f"tv-v{first.pk}", "lora_path": first.path}, AUTH)
    ]
    assert chat_model_name(tv_kb) == f"tv-v{first.pk}"

    runtime_lora.received.clear()
    assert model_version_activate(version=second) is True
    assert runtime_lora.received == [
        (
            "/v1/load_lora_adapter",
            {"lora_name": f"tv-v{second.pk}", "lora_path": second.path},
            AUTH,
        ),
        ("/v1/unload_lora_adapter", {"lora_name": f"tv-v{first.pk}"}, AUTH),
    ]
    assert active_version(kb=tv_kb, kind="generator") == second
    assert chat_model_name(tv_kb) == f"tv-v{second.pk}"

    # Activating it again (after a server restart, say): "already loaded" is not an error,
    # and nothing is unloaded.
    runtime_lora.received.clear()
    runtime_lora.replies["/v1/load_lora_adapter"] = [
        (
            400,
            {
                "object": "error",
                "message": f"The lora adapter 'tv-v{second.pk}' has already been loaded.",
                "type": "BadRequestError",
                "code": 400,
            },
        )
    ]
    assert model_version_activate(version=second) is True
    assert [r[0] for r in runtime_lora.received] == ["/v1/load_lora_adapter"]


@pytest.mark.parametrize("status", [404, 500])
def test_it_keeps_the_old_adapter_when_the_server_refuses_the_new_one(
    tv_kb: Any,
    runtime_lora: FakeVLLM,
    adapter: Callable[[str], ModelVersion],
    alice: Any,
    api_token_for: Callable[[Any], str],
    status: int,
) -> None:
    first, second = adapter("first"), adapter("second")
    model_version_activate(version=first)
    runtime_lora.received.clear()
    runtime_lora.replies["/v1/load_lora_adapter"] = [
        (status, {"object": "error", "message": "No adapter found at /x", "code": status})
    ]
    with pytest.raises(UpstreamError) as caught:
        model_version_activate(version=second)
    assert caught.value.message == (
        f"The student model server refused to load adapter 'tv-v{second.pk}' "
        f"(HTTP {status}): No adapter found at /x"
    )
    assert [r[0] for r in runtime_lora.received] == ["/v1/load_lora_adapter"]  # no unload
    assert active_version(kb=tv_kb, kind="generator") == first

    # Through the API: the one error shape, with the server's message.
    runtime_lora.replies["/v1/load_lora_adapter"] = [(status, "adapter folder unreadable")]
    response = Client().post(
        f"/api/model-versions/{second.pk}/activate",
        headers={"Authorization": f"Bearer {api_token_for(alice)}"},
    )
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "lora_load_failed"
    assert error["message"].endswith(f"(HTTP {status}): adapter folder unreadable")
    assert active_version(kb=tv_kb, kind="generator") == first
    assert chat_model_name(tv_kb) == f"tv-v{first.pk}"


def test_it_keeps_the_old_adapter_when_the_server_is_unreachable(
    tv_kb: Any, settings: Any, adapter: Callable[[str], ModelVersion]
) -> None:
    settings.RAFTWEB_VLLM_RUNTIME_LORA = True
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _student(f"http://127.0.0.1:{port}/v1")
    version = adapter("first")
    with pytest.raises(Unavailable, match=r"could not be reached to load lora adapter 'tv-v\d+'"):
        model_version_activate(version=version)
    assert active_version(kb=tv_kb, kind="generator") is None


def test_a_failed_unload_leaves_the_new_adapter_active(
    tv_kb: Any,
    runtime_lora: FakeVLLM,
    adapter: Callable[[str], ModelVersion],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = adapter("first"), adapter("second")
    model_version_activate(version=first)
    runtime_lora.replies["/v1/unload_lora_adapter"] = [(500, {"message": "boom"})]
    assert model_version_activate(version=second) is True
    assert active_version(kb=tv_kb, kind="generator") == second
    assert f"could not unload LoRA adapter tv-v{first.pk}" in caplog.text and "boom" in caplog.text


@pytest.mark.parametrize("setting, backend", [(False, "openai"), (True, "hf")])
def test_it_talks_to_no_server_unless_runtime_lora_is_on_for_an_openai_student(
    tv_kb: Any,
    settings: Any,
    vllm: FakeVLLM,
    adapter: Callable[[str], ModelVersion],
    setting: bool,
    backend: str,
) -> None:
    settings.RAFTWEB_VLLM_RUNTIME_LORA = setting
    _student(vllm.url if backend == "openai" else "", backend=backend)
    version = adapter("first")
    assert model_version_activate(version=version) is True
    assert active_version(kb=tv_kb, kind="generator") == version
    assert vllm.received == [] and chat_model_name(tv_kb) is None


def test_a_full_weight_version_unloads_the_adapter_it_replaces(
    tv_kb: Any, runtime_lora: FakeVLLM, adapter: Callable[[str], ModelVersion]
) -> None:
    first = adapter("first")
    model_version_activate(version=first)
    full = ModelVersion.objects.create(kb=tv_kb, kind="generator", label="full", path="/m")
    runtime_lora.received.clear()
    model_version_activate(version=full)
    assert runtime_lora.received == [
        ("/v1/unload_lora_adapter", {"lora_name": f"tv-v{first.pk}"}, AUTH)
    ]
    assert chat_model_name(tv_kb) is None
