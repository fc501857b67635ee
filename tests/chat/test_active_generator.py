"""Chat answers with the KB's active generator version (training.serving is the one seam)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from asgiref.sync import async_to_sync

from chat.services import chat_model
from raftweb.core.services import profile_update
from raftweb.errors import Invalid, NotFound
from raftweb.testing.scripted_llm import ScriptedLLM
from training.models import ModelVersion
from training.services import model_version_activate
from training.serving import generator_spec

pytest_plugins = ["tests.fixtures.tiny_model"]


def _version(kb: Any, path: Path, **fields: Any) -> ModelVersion:
    path.mkdir(parents=True, exist_ok=True)
    fields = {"label": "v1", "is_adapter": True, **fields}
    return ModelVersion.objects.create(kb=kb, kind="generator", path=str(path), **fields)


@pytest.fixture
def adapter_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A real peft adapter over the tiny model, with random B so it changes the outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    config = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    adapted.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_choices_name_the_base_the_active_version_a_version_or_a_profile(
    chat_kb: Any, tmp_path: Path, settings: Any
) -> None:
    profile_update(role="student", user=None, backend="hf", model="/models/base")
    version = _version(chat_kb, tmp_path / "a", base_model="/models/base")

    spec, label, ident = generator_spec(chat_kb, "active")
    assert (spec.model, spec.adapter_path, label, ident) == ("/models/base", "", "base", None)

    model_version_activate(version=version)
    spec, label, ident = generator_spec(chat_kb, "active")
    assert (spec.adapter_path, label, ident) == (version.path, "v1", version.pk)
    assert "generator version 'v1'" in spec.setting  # errors name what to fix

    assert generator_spec(chat_kb, "base")[0].adapter_path == ""
    assert generator_spec(chat_kb, f"version:{version.pk}")[2] == version.pk
    assert generator_spec(chat_kb, "profile:teacher")[1] == "profile:teacher"

    with pytest.raises(NotFound, match="no generator version 999"):
        generator_spec(chat_kb, "version:999")
    with pytest.raises(Invalid, match="Unknown model profile 'embedding'"):
        generator_spec(chat_kb, "profile:embedding")
    with pytest.raises(Invalid, match="Unknown generator 'tuned'"):
        generator_spec(chat_kb, "tuned")


def test_a_version_of_another_kb_is_not_found(
    make_kb: Callable[..., Any], chat_kb: Any, tmp_path: Path
) -> None:
    other = make_kb(slug="other", docs={"a.txt": "Some other text about printers."})
    version = _version(other, tmp_path / "b")
    with pytest.raises(NotFound):
        generator_spec(chat_kb, f"version:{version.pk}")


def test_full_weights_and_merged_adapters_load_as_the_model(chat_kb: Any, tmp_path: Path) -> None:
    profile_update(role="student", user=None, backend="hf", model="/models/base")
    full = _version(chat_kb, tmp_path / "full", label="full", is_adapter=False)
    merged = _version(chat_kb, tmp_path / "ad", label="merged", merged_path="/models/merged")
    assert generator_spec(chat_kb, f"version:{full.pk}")[0].model == full.path
    spec = generator_spec(chat_kb, f"version:{merged.pk}")[0]
    assert (spec.model, spec.adapter_path) == ("/models/merged", "")


def test_chat_answers_with_the_active_adapter_in_process(
    chat_kb: Any, tiny_model_dir: Path, adapter_dir: Path
) -> None:
    from peft import PeftModel

    profile_update(role="student", user=None, backend="hf", model=str(tiny_model_dir))
    base = async_to_sync(chat_model)(chat_kb)
    assert base.model_version == str(tiny_model_dir)[-200:]

    version = ModelVersion.objects.create(
        kb=chat_kb, kind="generator", label="tuned", path=str(adapter_dir), is_adapter=True,
        base_model=str(tiny_model_dir),
    )  # fmt: skip
    model_version_activate(version=version)
    tuned = async_to_sync(chat_model)(chat_kb)
    assert tuned.model_version == "tuned"
    assert tuned.backend is not base.backend
    loaded = async_to_sync(tuned.backend.load)()  # type: ignore[attr-defined]
    assert isinstance(loaded.model, PeftModel)


def test_a_chat_turn_names_the_runtime_adapter_to_the_vllm_server(
    chat_kb: Any,
    student_llm: ScriptedLLM,
    ask_sync: Callable[[Any, str], Any],
    conversation_for: Callable[[Any, Any], Any],
    django_user_model: Any,
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import training.activation as activation

    # The server's load endpoint is another test's subject (test_runtime_lora.py).
    monkeypatch.setattr(activation, "lora_load", lambda **kwargs: None)
    settings.RAFTWEB_VLLM_RUNTIME_LORA = True
    version = _version(chat_kb, tmp_path / "adapter")
    model_version_activate(version=version)

    user = django_user_model.objects.create_user("sam", password="pw")
    answer = ask_sync(conversation_for(user, chat_kb), "How do I reset the television?")
    assert student_llm.requests[-1]["model"] == f"{chat_kb.slug}-v{version.pk}"
    assert (answer.model_name, answer.model_version) == (f"{chat_kb.slug}-v{version.pk}", "v1")
