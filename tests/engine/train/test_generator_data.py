"""Generator training data: RAFT rows rendered exactly as chat prompts the student, and the
loss on the answer only (labels -100 on every prompt token)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raftweb.raft.formats import ChatExporter
from raftweb.raft.prompts import build_messages
from raftweb.testing.tiny_model import synthetic_raft_rows
from raftweb.train import data as train_data
from raftweb.train import generator
from raftweb.train.config import resolve_config


def _rows(n: int = 6, **kw: object) -> list:
    return [train_data.row_from_dict(r) for r in synthetic_raft_rows(n, **kw)]


def test_it_builds_the_prompt_with_the_chat_pipelines_function() -> None:
    row = _rows(1)[0]
    example = train_data.row_example(row)
    # The very messages raftweb.answering sends for this question and these documents.
    expected = [m.as_dict() for m in build_messages(row.question, row.context_texts)]
    assert example["prompt"] == expected
    assert example["completion"] == [{"role": "assistant", "content": row.cot_answer}]
    assert example["completion"][0]["content"].rstrip().split("\n")[-1].startswith("<ANSWER>:")
    # ... and what the chat exporter writes for the same row.
    assert ChatExporter().row(row)["messages"] == example["prompt"] + example["completion"]
    custom = train_data.row_example(row, system="You are Bob.")
    assert custom["prompt"][0]["content"].startswith("You are Bob.")


def _trainer(
    tiny_model_dir: Path, tmp_path: Path, *, packing: bool, rows: list, max_seq_length: int = 0
) -> tuple:
    from transformers import AutoModelForCausalLM

    config = resolve_config(
        "generator",
        "cpu-smoke",
        {"base_model": str(tiny_model_dir), "packing": packing, "batch_size": 2},
    )
    tokenizer = generator.load_tokenizer(str(tiny_model_dir), "base_model")
    prepared = train_data.prepare_examples(
        tokenizer, rows, [], max_seq_length=max_seq_length, cap=4096, model_max=2048
    )
    trainer = generator.build_trainer(
        config,
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        tokenizer=tokenizer,
        train_dataset=train_data.to_dataset(prepared.train),
        eval_dataset=None,
        run_dir=tmp_path,
        events=generator.Events(tmp_path / "metrics.jsonl"),
        progress=generator.Progress(),
        max_seq_length=prepared.max_seq_length,
        bf16=False,
        device="cpu",
    )
    return trainer, tokenizer, prepared


def test_it_masks_the_prompt_tokens_and_trains_on_the_answer(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows = _rows(4)
    trainer, tokenizer, prepared = _trainer(tiny_model_dir, tmp_path, packing=False, rows=rows)
    for i, example in enumerate(prepared.train):
        item = trainer.train_dataset[i]
        ids, labels = item["input_ids"], item["labels"]
        n_prompt = train_data.prompt_length(tokenizer, example)
        assert 0 < n_prompt < len(ids) == len(labels)
        assert set(labels[:n_prompt]) == {-100}  # system, documents, question, "assistant\n"
        assert labels[n_prompt:] == ids[n_prompt:]  # the answer and its end-of-turn token
        answer = rows[i].cot_answer
        assert tokenizer.decode(labels[n_prompt:]) == answer + "<|im_end|>\n"
        # The prompt part is what the hf backend feeds at inference (generation prompt included).
        served = tokenizer.apply_chat_template(
            example["prompt"], tokenize=True, add_generation_prompt=True
        )
        assert ids[:n_prompt] == train_data.token_ids(served)

    # The collated batch keeps the mask and pads labels with -100.
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    labels, mask = batch["labels"], batch["attention_mask"]
    assert (labels[mask == 0] == -100).all()
    for row in range(2):
        n_prompt = train_data.prompt_length(tokenizer, prepared.train[row])
        assert (labels[row, :n_prompt] == -100).all()
        assert (labels[row, n_prompt : int(mask[row].sum())] != -100).all()


def test_it_keeps_the_mask_when_rows_are_packed(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = _rows(6, docs=(1, 4))  # rows of several lengths, several to a 1024-token pack
    trainer, tokenizer, prepared = _trainer(
        tiny_model_dir, tmp_path, packing=True, rows=rows, max_seq_length=1024
    )
    packed = trainer.train_dataset
    assert len(packed) < len(prepared.train)  # rows were packed together
    answer_tokens = sum(
        train_data.example_length(tokenizer, ex) - train_data.prompt_length(tokenizer, ex)
        for ex in prepared.train
    )
    trained = sum(sum(1 for label in item["labels"] if label != -100) for item in packed)
    assert trained == answer_tokens  # exactly the answers, no prompt token
    batch = trainer.data_collator([packed[0]])
    assert "attention_mask" not in batch  # padding-free: rows are told apart by position ids
    assert int((batch["position_ids"][0] == 0).sum()) == len(packed[0]["seq_lengths"])


def test_it_suggests_the_sequence_length_and_leaves_out_longer_rows(tiny_model_dir: Path) -> None:
    tokenizer = generator.load_tokenizer(str(tiny_model_dir), "base_model")
    rows = _rows(10, docs=(1, 6))
    lengths = [train_data.example_length(tokenizer, train_data.row_example(r)) for r in rows]
    auto = train_data.prepare_examples(
        tokenizer, rows, [], max_seq_length=0, cap=4096, model_max=2048
    )
    assert auto.longest == max(lengths)
    assert auto.max_seq_length % 64 == 0 and max(lengths) <= auto.max_seq_length < max(lengths) + 64
    assert len(auto.train) == 10 and auto.dropped_too_long == 0
    assert train_data.suggest_max_seq_length([5000], cap=4096, model_max=2048) == 2048

    limit = sorted(lengths)[4]
    cut = train_data.prepare_examples(
        tokenizer, rows[:8], rows[8:], max_seq_length=limit, cap=4096, model_max=2048
    )
    assert cut.max_seq_length == limit
    assert cut.dropped_too_long == sum(1 for n in lengths if n > limit)
    assert len(cut.train) + len(cut.eval) == sum(1 for n in lengths if n <= limit)


def test_it_reads_rows_and_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    good = synthetic_raft_rows(2)
    path.write_text(json.dumps(good[0]) + "\n\n" + json.dumps(good[1]) + "\n")
    rows = train_data.read_rows(path)
    assert [r.question for r in rows] == [g["question"] for g in good]
    assert rows[0].context_texts == good[0]["context_texts"]
    assert train_data.read_rows(tmp_path / "missing.jsonl") == []

    path.write_text(json.dumps(good[0]) + "\n" + '{"question": "q"}\n')
    with pytest.raises(train_data.DataError, match=r"train.jsonl line 2: .*cot_answer"):
        train_data.read_rows(path)
    path.write_text("not json\n")
    with pytest.raises(train_data.DataError, match="line 1"):
        train_data.read_rows(path)


def test_it_holds_out_the_same_rows_whatever_their_order() -> None:
    rows = _rows(40)
    train, held = train_data.hold_out(rows, 0.1)
    assert len(held) == 4 and len(train) == 36
    assert not {r.id for r in train} & {r.id for r in held}
    _, held_again = train_data.hold_out(list(reversed(rows)), 0.1)
    assert {r.id for r in held_again} == {r.id for r in held}
    assert train_data.hold_out(rows[:5], 0.1) == (rows[:5], [])


def test_the_fused_head_scores_only_the_answer_on_cpu(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRL's fused LM head projects only the labelled (answer) positions on CPU too, not the
    whole RAFT prompt, and the loss is still the model's own (a TRL upgrade that drops the hook
    fails here, not silently in the benchmark)."""
    import torch
    from trl.trainer import utils as trl_utils

    trainer, _, _ = _trainer(tiny_model_dir, tmp_path, packing=False, rows=_rows(4))
    projected: list[int] = []
    kernel = trl_utils._ChunkedLogProbFunction

    class Recording:
        @staticmethod
        def apply(hidden: torch.Tensor, *args: object) -> object:
            projected.append(hidden.shape[0])
            return kernel.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Recording)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    model = trainer.model.eval()  # no dropout: the two forwards below must agree
    with torch.no_grad():
        loss = trainer.compute_loss(model, trainer._prepare_inputs(dict(batch)))
        own = model(**batch).loss  # the model's own forward: full logits, mean over labels

    next_labels = batch["labels"][:, 1:]
    answer = int((next_labels != -100).sum())
    assert projected == [answer]
    assert answer < next_labels.numel() / 2  # the prompt (documents) is most of a RAFT row
    assert float(loss) == pytest.approx(float(own), rel=1e-4)
