"""Serving generator adapters from a vLLM server (the ``openai`` backend of the student profile).

Two ways, one adapter naming (``<kb-slug>-v<version id>``), so a chat request names the same
model whichever way the adapter reached the server:

- at start-up: ``manage.py vllm_command <kb>`` prints ``vllm serve ... --enable-lora
  --lora-modules name=path ...`` (:func:`vllm_serve_command`);
- at run time: with the ``RAFTWEB_VLLM_RUNTIME_LORA`` setting on, activating an adapter version
  loads it through vLLM's ``POST /v1/load_lora_adapter`` and unloads the one it replaces through
  ``POST /v1/unload_lora_adapter`` (the server must run with
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``). Adapter paths are paths on the vLLM host: the
  server reads the folder itself.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings

from raftweb.core.services import profile_spec
from raftweb.errors import Unavailable, UpstreamError
from raftweb.llm.base import ModelSpec
from raftweb.llm.catalog import STUDENT
from training.models import ModelKind, ModelVersion

log = logging.getLogger(__name__)

# The setting (or, when settings.py does not define it, the environment variable) that turns
# runtime adapter loading on.
RUNTIME_LORA_SETTING = "RAFTWEB_VLLM_RUNTIME_LORA"
LORA_TIMEOUT_S = 60.0
# vLLM accepts only these values for --max-lora-rank; a rank in between is rounded up.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Where a run's config keeps the adapter rank when the adapter folder does not say.
RANK_CONFIG_KEYS = ("lora_rank", "lora_r", "r")

_TRUE = {"1", "true", "yes", "on"}


def runtime_lora_enabled() -> bool:
    value: Any = getattr(settings, RUNTIME_LORA_SETTING, None)
    if value is None:
        value = os.environ.get(RUNTIME_LORA_SETTING, "")
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


def adapter_name(version: ModelVersion) -> str:
    """The stable name vLLM serves ``version`` under (also its ``model`` in chat requests)."""
    return f"{version.kb.slug}-v{version.pk}"


def is_lora(version: ModelVersion | None) -> bool:
    return (
        version is not None
        and version.kind == ModelKind.GENERATOR
        and version.is_adapter
        and bool(version.path)
    )


def runtime_lora_server() -> ModelSpec | None:
    """The student profile's spec when adapters are loaded into it at run time; else None."""
    if not runtime_lora_enabled():
        return None
    spec = profile_spec(STUDENT)
    if spec.backend != "openai" or not spec.base_url:
        return None
    return spec


# ------------------------------------------------------------------------------ runtime


def _endpoint(base_url: str, action: str) -> str:
    """``http://host:8001/v1`` (the OpenAI base URL) -> ``http://host:8001/v1/<action>``."""
    parts = urlsplit(base_url.rstrip("/"))
    path = parts.path
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/v1/{action}", "", ""))


def _server_message(response: httpx.Response) -> str:
    """vLLM answers errors as ``{"message": ...}`` (or ``{"error": {"message": ...}}``)."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500] or response.reason_phrase
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message") or inner.get("detail")
        if message:
            return str(message)[:500]
    return text[:500]


def _post(spec: ModelSpec, action: str, body: dict[str, str]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
    url = _endpoint(spec.base_url, action)
    try:
        return httpx.post(url, json=body, headers=headers, timeout=LORA_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"The student model server could not be reached to {action.replace('_', ' ')} "
            f"{body['lora_name']!r} ({url}): {exc}",
            code="lora_server_unreachable",
        ) from None


def lora_load(*, spec: ModelSpec, name: str, path: str) -> None:
    """Load an adapter into the server; one already loaded under ``name`` counts as loaded."""
    response = _post(spec, "load_lora_adapter", {"lora_name": name, "lora_path": path})
    if response.is_success:
        return
    message = _server_message(response)
    if response.status_code == 400 and "already been loaded" in message:
        return
    raise UpstreamError(
        f"The student model server refused to load adapter {name!r} "
        f"(HTTP {response.status_code}): {message}",
        code="lora_load_failed",
        details={"server_status": response.status_code},
    )


def lora_unload(*, spec: ModelSpec, name: str) -> None:
    response = _post(spec, "unload_lora_adapter", {"lora_name": name})
    if not response.is_success:
        raise UpstreamError(
            f"The student model server refused to unload adapter {name!r} "
            f"(HTTP {response.status_code}): {_server_message(response)}",
            code="lora_unload_failed",
            details={"server_status": response.status_code},
        )


# ------------------------------------------------------------------------------ start-up


def _rank_from(version: ModelVersion) -> int | None:
    try:
        rank = json.loads((Path(version.path) / "adapter_config.json").read_text()).get("r")
    except (OSError, ValueError, AttributeError):
        rank = None
    if rank is None and version.run_id is not None:
        config = version.run.config or {}
        rank = next((config[k] for k in RANK_CONFIG_KEYS if config.get(k) is not None), None)
    try:
        return int(rank) if rank is not None else None
    except (TypeError, ValueError):
        return None


def vllm_max_lora_rank(ranks: Sequence[int]) -> int:
    """The smallest value vLLM accepts for ``--max-lora-rank`` that fits every rank."""
    need = max(ranks)
    return next((r for r in VLLM_LORA_RANKS if r >= need), need)


def vllm_serve_command(
    *, base_model: str, adapters: Sequence[ModelVersion], runtime_lora: bool = False
) -> str:
    """``vllm serve`` for ``base_model`` serving ``adapters`` (in that order), shell-quoted.

    Adapters whose rank cannot be read count as the run config's default (64)."""
    ranks = [_rank_from(v) or 64 for v in adapters]
    argv = [
        "vllm",
        "serve",
        base_model,
        "--enable-lora",
        "--max-lora-rank",
        str(vllm_max_lora_rank(ranks)),
        "--lora-modules",
        *(f"{adapter_name(v)}={v.path}" for v in adapters),
    ]
    command = shlex.join(argv)
    return f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True {command}" if runtime_lora else command
