"""`manage.py vllm_command <kb>`: the `vllm serve` line for a KB's generator adapters."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from training.models import ActiveModel, ModelVersion

pytestmark = pytest.mark.django_db


def _adapter(kb: Any, root: Path, label: str, rank: int | None, base: str = "org/base") -> Any:
    path = root / label
    path.mkdir(parents=True)
    if rank is not None:
        (path / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "r": rank, "base_model_name_or_path": base})
        )
    return ModelVersion.objects.create(
        kb=kb, kind="generator", label=label, base_model=base, path=str(path), is_adapter=True
    )


def _run(slug: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("vllm_command", slug, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_prints_the_serve_command_with_the_active_adapter_first(
    tv_kb: Any, tmp_path: Path, settings: Any
) -> None:
    settings.RAFTWEB_VLLM_RUNTIME_LORA = False
    old = _adapter(tv_kb, tmp_path, "old", 8)
    active = _adapter(tv_kb, tmp_path, "with space", 40)
    new = _adapter(tv_kb, tmp_path, "new", 16)
    _adapter(tv_kb, tmp_path, "other-base", 4, base="org/other")
    ModelVersion.objects.create(
        kb=tv_kb, kind="generator", label="full", base_model="org/base", path=str(tmp_path)
    )
    ModelVersion.objects.create(kb=tv_kb, kind="embedding", label="emb", path=str(tmp_path))
    ActiveModel.objects.create(kb=tv_kb, kind="generator", version=active)

    out, err = _run("tv")
    # Rank 40 is not one vLLM accepts: the next one up that it does is 64.
    assert out == (
        "vllm serve org/base --enable-lora --max-lora-rank 64 --lora-modules "
        f"'tv-v{active.pk}={tmp_path}/with space' "
        f"tv-v{new.pk}={tmp_path}/new tv-v{old.pk}={tmp_path}/old\n"
    )
    assert err == "skipped other-base: its base model is org/other\n"


def test_it_reads_the_rank_from_the_run_config_and_names_the_runtime_switch(
    tv_kb: Any, tmp_path: Path, settings: Any
) -> None:
    settings.RAFTWEB_VLLM_RUNTIME_LORA = True
    from training.models import TrainingRun

    run = TrainingRun.objects.create(kb=tv_kb, kind="generator", config={"lora_rank": 128})
    version = _adapter(tv_kb, tmp_path, "a", None)
    ModelVersion.objects.filter(pk=version.pk).update(run=run)

    out, _ = _run("tv")
    assert out == (
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve org/base --enable-lora "
        f"--max-lora-rank 128 --lora-modules tv-v{version.pk}={tmp_path}/a\n"
    )


def test_it_says_when_there_is_nothing_to_serve(tv_kb: Any) -> None:
    with pytest.raises(CommandError, match="No knowledge base with slug 'nope'"):
        _run("nope")
    with pytest.raises(CommandError, match="tv has no generator adapter versions"):
        _run("tv")
