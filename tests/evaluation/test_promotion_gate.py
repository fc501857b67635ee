"""The promotion gate: a candidate that regresses against the active version on the gate
metrics is refused (API, page) unless confirmed; `train --wait --activate` evaluates the new
version on the eval split first and refuses a regressing one unless --force."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from evaluation.models import EvalRun
from raftweb.errors import Conflict
from training.activation import PromotionRefused
from training.models import ModelVersion
from training.selectors import active_version
from training.services import model_version_activate

pytestmark = pytest.mark.django_db


def _version(kb: Any, label: str = "cand") -> ModelVersion:
    return ModelVersion.objects.create(
        kb=kb, kind="generator", label=label, path="/nonexistent", is_adapter=True
    )


def _recorded(kb: Any, version: ModelVersion, *, active: float, candidate: float) -> EvalRun:
    """A finished eval-split run comparing the base (active) with ``version``."""
    labels = ["emb=active,gen=base", f"emb=active,gen=version:{version.pk}"]
    summary = [
        {"config": labels[0], "metrics": {"parse_success": active, "recall@k": 0.5}, "counts": {}},
        {"config": labels[1], "metrics": {"parse_success": candidate, "recall@k": 0.5}, "counts": {}},
    ]  # fmt: skip
    return EvalRun.objects.create(
        kb=kb,
        source="eval split",
        configs=[{"label": label} for label in labels],
        status="succeeded",
        summary=summary,
    )


def test_it_refuses_a_regressing_version_unless_forced(db: Any, admin_client: Any) -> None:
    from corpus.models import KnowledgeBase

    kb = KnowledgeBase.objects.create(slug="gate", name="Gate")
    worse, better = _version(kb, "worse"), _version(kb, "better")
    run = _recorded(kb, worse, active=0.8, candidate=0.5)
    _recorded(kb, better, active=0.8, candidate=0.9)
    with pytest.raises(PromotionRefused) as refused:
        model_version_activate(version=worse)
    gate = refused.value.details["gate"]
    assert gate["regressions"] == ["parse_success"] and gate["eval_run"] == run.pk
    delta = next(d for d in gate["deltas"] if d["metric"] == "parse_success")
    assert delta == {"metric": "parse_success", "active": 0.8, "candidate": 0.5,
                     "delta": -0.3, "regressed": True}  # fmt: skip
    assert active_version(kb=kb, kind="generator") is None
    # The API answers 409 with the deltas; the page asks for confirmation.
    response = admin_client.post(f"/api/model-versions/{worse.pk}/activate")
    assert response.status_code == 409 and response.json()["error"]["code"] == "regression"
    page = admin_client.get(f"/evaluation/versions/{worse.pk}/gate/")
    assert page.status_code == 200 and b"regresses" in page.content
    assert b'name="confirm"' in page.content
    admin_client.post(f"/evaluation/versions/{worse.pk}/gate/", {"action": "activate"})
    assert active_version(kb=kb, kind="generator") is None
    admin_client.post(
        f"/evaluation/versions/{worse.pk}/gate/", {"action": "activate", "confirm": "1"}
    )
    assert active_version(kb=kb, kind="generator") == worse
    # An improving version passes without confirmation... measured against base, as recorded.
    ModelVersion.objects.filter(pk=worse.pk).delete()
    assert model_version_activate(version=better) is True


@pytest.fixture
def fake_training(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.training.conftest import permissive_resolve_config
    from training import services

    settings.TRAIN_RUNS_DIR = tmp_path / "runs"
    settings.TRAIN_MODULE = "tests.training.fake_train"
    settings.TRAIN_LAUNCHER = "python"
    settings.TRAIN_POLL_S = 0.05
    settings.EVAL_MAX_TOKENS = 8
    monkeypatch.setattr(services, "_engine_resolve_config", permissive_resolve_config)
    for name in ("FAKE_TRAIN_STEPS", "FAKE_TRAIN_FAIL_AT", "FAKE_TRAIN_NO_DONE"):
        monkeypatch.delenv(name, raising=False)


def test_train_activate_evaluates_and_refuses_a_regressing_version(
    eval_kb: Any, tiny_model_dir: Path, fake_training: None, judge_down: None
) -> None:
    from corpus.models import QAPair
    from raftweb.core.services import profile_update

    # The student is the tiny model in-process: its answers never parse (0.0), and the fake
    # training's artifact cannot even be loaded, so the new version answers nothing.
    profile_update(role="student", user=None, backend="hf", model=str(tiny_model_dir))
    for pair in QAPair.objects.filter(kb=eval_kb, refusal=False):
        pair.pk, pair.split = None, "train"
        pair.save()
    out = StringIO()
    with pytest.raises(CommandError, match="not activated: .* regresses"):
        call_command("train", "tv", "--kind", "generator", "--wait", "--activate", stdout=out,
                     stderr=StringIO())  # fmt: skip
    lines = out.getvalue().strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) == {"run", "status", "version", "metrics"}
    assert result["status"] == "succeeded" and result["version"]
    assert any("parse_success" in line and "REGRESSES" in line for line in lines)
    assert active_version(kb=eval_kb, kind="generator") is None
    gate_run = EvalRun.objects.get()
    assert gate_run.status == "succeeded" and gate_run.labels == [
        "emb=active,gen=base",
        f"emb=active,gen=version:{result['version']}",
    ]
    out = StringIO()
    call_command("train", "tv", "--kind", "generator", "--wait", "--activate", "--force",
                 stdout=out, stderr=StringIO())  # fmt: skip
    forced = json.loads(out.getvalue().strip().splitlines()[-1])
    assert active_version(kb=eval_kb, kind="generator").pk == forced["version"]
    assert EvalRun.objects.count() == 1  # --force does not evaluate


def test_it_compares_an_embedding_version_on_its_own_index(eval_kb: Any) -> None:
    from corpus.models import EmbeddingIndex
    from evaluation.gate import gate_pair
    from evaluation.resolve import resolve_config

    EmbeddingIndex.objects.create(kb=eval_kb, version="tuned-1", model="/models/tuned")
    version = ModelVersion.objects.create(
        kb=eval_kb, kind="embedding", label="emb-1", path="/models/tuned",
        embedding_version="tuned-1",
    )  # fmt: skip
    pair = gate_pair(version)
    assert pair.active.label == "emb=base,gen=active"
    assert pair.candidate.label == f"emb=version:{version.pk},gen=active"
    assert resolve_config(eval_kb, pair.candidate).embedding_version == "tuned-1"
    EmbeddingIndex.objects.filter(version="tuned-1").update(status="building")
    with pytest.raises(Conflict, match="not ready"):
        resolve_config(eval_kb, pair.candidate)
