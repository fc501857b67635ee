"""training_run_start: refuses a KB with nothing approved, validates the config through the
engine, writes the run directory of the contract, and queues the run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from corpus.models import QAPair
from raftweb.errors import RaftwebError
from raftweb.raft.formats import RaftRow
from raftweb.typedconfig import ConfigError
from training import services
from training.models import TrainingRun
from training.services import training_run_start

pytestmark = pytest.mark.django_db


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_it_refuses_a_kb_without_approved_train_rows(tv_kb: Any, settings: Any) -> None:
    # Eval-split and pending pairs are not training rows.
    QAPair.objects.filter(kb=tv_kb, split="train", status="approved").update(status="pending")
    assert QAPair.objects.filter(kb=tv_kb, status="approved", split="eval").exists()
    with pytest.raises(RaftwebError) as caught:
        training_run_start(kb=tv_kb, kind="generator")
    assert caught.value.message == "No approved training rows in tv: review some pairs first"
    assert caught.value.code == "no_rows" and caught.value.status == 400
    assert not TrainingRun.objects.exists()
    assert not Path(settings.TRAIN_RUNS_DIR).exists() or not any(
        Path(settings.TRAIN_RUNS_DIR).iterdir()
    )


def test_it_writes_the_generator_run_directory(tv_kb: Any, settings: Any) -> None:
    run = training_run_start(kb=tv_kb, kind="generator", enqueue=False)
    run_dir = Path(run.run_dir)
    assert run_dir == Path(settings.TRAIN_RUNS_DIR) / str(run.pk)
    assert run.status == TrainingRun.Status.QUEUED
    assert json.loads((run_dir / "config.json").read_text())["kind"] == "generator"
    train = _lines(run_dir / "data" / "train.jsonl")
    held = _lines(run_dir / "data" / "eval.jsonl")
    # 10 approved train rows: a tenth held out for the eval loss; nothing else is trained on.
    assert (len(train), len(held)) == (9, 1)
    assert {r["question"] for r in train + held} == {
        f"Question {i} about {name}?"
        for i, name in enumerate(["reset.txt", "warranty.txt", "remote.txt"] * 4)
        if i < 10
    }
    # One RaftRow per line, with its keys exactly.
    row = RaftRow(**train[0])
    assert set(train[0]) == {f.name for f in dataclasses.fields(RaftRow)}
    assert row.oracle_index == 0 and row.context_texts[0] == row.oracle_text
    assert (run.rows_train, run.rows_eval, run.rows_from_feedback) == (9, 1, 1)
    digest = hashlib.sha256()
    for name in ("eval.jsonl", "train.jsonl"):
        digest.update(name.encode() + b"\0" + (run_dir / "data" / name).read_bytes() + b"\0")
    assert run.data_hash == digest.hexdigest()


def test_it_holds_out_the_same_rows_every_time(tv_kb: Any) -> None:
    first = training_run_start(kb=tv_kb, kind="generator", enqueue=False)
    second = training_run_start(kb=tv_kb, kind="generator", enqueue=False)
    assert Path(first.run_dir) != Path(second.run_dir)
    assert first.data_hash == second.data_hash
    QAPair.objects.filter(kb=tv_kb, question="Question 3 about reset.txt?").update(
        final_answer="changed"
    )
    third = training_run_start(kb=tv_kb, kind="generator", enqueue=False)
    assert third.data_hash != first.data_hash


def test_it_writes_embedding_pairs_eval_rows_and_the_corpus(tv_kb: Any) -> None:
    # A row without an oracle passage teaches the embedding nothing.
    QAPair.objects.filter(kb=tv_kb, question="Question 9 about reset.txt?").update(
        oracle_text="", oracle_index=None
    )
    run = training_run_start(kb=tv_kb, kind="embedding", enqueue=False)
    data = Path(run.run_dir) / "data"
    train = _lines(data / "train.jsonl")
    assert len(train) == 9 and run.rows_train == 9
    for record in train:
        assert set(record) == {"query", "positive", "negatives"}
        assert record["positive"] and record["positive"] not in record["negatives"]
        assert len(record["negatives"]) == 2
    pair = QAPair.objects.get(kb=tv_kb, question="Question 1 about warranty.txt?")
    assert {"query": pair.question, "positive": pair.oracle_text} == {
        k: v
        for k, v in next(r for r in train if r["query"] == pair.question).items()
        if k != "negatives"
    }
    evals = _lines(data / "eval.jsonl")
    assert sorted(r["query"] for r in evals) == ["Eval question 0?", "Eval question 1?"]
    assert run.rows_eval == 2
    corpus = _lines(data / "corpus.jsonl")
    assert len(corpus) == 3 and all(set(c) == {"id", "text"} for c in corpus)
    assert {c["text"] for c in corpus} == {r["positive"] for r in train}


def test_it_rejects_a_bad_kind_or_method(tv_kb: Any) -> None:
    with pytest.raises(RaftwebError, match="kind must be one of generator, embedding"):
        training_run_start(kb=tv_kb, kind="reranker")
    with pytest.raises(RaftwebError, match="method must be one of lora, qlora, full"):
        training_run_start(kb=tv_kb, kind="generator", method="dpo")
    assert not TrainingRun.objects.exists()


def test_it_validates_the_config_through_the_engine(
    tv_kb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []

    @dataclasses.dataclass
    class Resolved:
        base_model: str = "tiny"
        method: str = "lora"
        epochs: int = 1

        def to_dict(self) -> dict[str, Any]:
            return dataclasses.asdict(self)

    def resolve(kind: str, preset: str | None, overrides: dict[str, Any]) -> Resolved:
        calls.append((kind, preset, overrides))
        if "bogus" in overrides:
            raise ConfigError("unknown training setting(s): bogus")
        return Resolved(**overrides)

    monkeypatch.setattr(services, "_engine_resolve_config", resolve)
    run = training_run_start(
        kb=tv_kb,
        kind="generator",
        method="qlora",
        preset="cpu-smoke",
        overrides={"epochs": 3},
        enqueue=False,
    )
    assert calls == [("generator", "cpu-smoke", {"epochs": 3, "method": "qlora"})]
    expected = {"base_model": "tiny", "method": "qlora", "epochs": 3, "kind": "generator"}
    assert run.config == expected
    assert json.loads((Path(run.run_dir) / "config.json").read_text()) == expected
    assert (run.method, run.preset) == ("qlora", "cpu-smoke")

    with pytest.raises(ConfigError, match="bogus"):
        training_run_start(kb=tv_kb, kind="generator", overrides={"bogus": 1}, enqueue=False)
    assert TrainingRun.objects.count() == 1


def test_it_queues_the_run_once_committed(
    tv_kb: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    queued: list[int] = []
    monkeypatch.setattr(services, "training_run_task", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_start(kb=tv_kb, kind="generator")
        assert queued == []
    assert queued == [run.pk]


def test_it_validates_the_config_with_the_engine_before_creating_a_run(tv_kb: Any) -> None:
    from raftweb.errors import RaftwebError
    from training.models import TrainingRun

    with pytest.raises(RaftwebError, match="unknown embedding training setting"):
        training_run_start(kb=tv_kb, kind="embedding", overrides={"nope": 1}, enqueue=False)
    with pytest.raises(RaftwebError, match="preset"):
        training_run_start(kb=tv_kb, kind="generator", preset="no-such-preset", enqueue=False)
    assert not TrainingRun.objects.exists()
    run = training_run_start(
        kb=tv_kb, kind="embedding", preset="cpu-smoke", overrides={"epochs": 1}, enqueue=False
    )
    assert run.config["epochs"] == 1 and run.config["kind"] == "embedding"
