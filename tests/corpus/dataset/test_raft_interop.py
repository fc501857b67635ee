"""Rows in the RAFT reference's layouts (ShishirPatil/gorilla raft/raft.py and format.py)
import with the right oracle and export back as they came.

The reference's rows are built here the way its code builds them: a uuid id, type "general",
``placeholder_title`` titles nested one list per row, the oracle as one of the shuffled
documents, ``instruction`` = ``<DOCUMENT>…</DOCUMENT>\\n`` per document + the question; its
completion converter appends ``<STOP>``; its eval converter writes ``question``,
``gold_final_answer`` (the text after the last ``<ANSWER>: ``) and ``context`` (the
instruction without its last line)."""

from __future__ import annotations

import json
from typing import Any

from corpus.dataset.io import qa_export_lines, qa_import
from corpus.models import Chunk, QAPair

pytest_plugins = ["tests.fixtures.raft"]

QUOTE = "open the power menu"


def _reference_hf_row(manual_kb: Any) -> dict[str, Any]:
    first, second = Chunk.objects.filter(document__name="power.txt").order_by("ordinal")
    camera = Chunk.objects.filter(document__name="camera.txt").order_by("ordinal").first()
    # The reference chunked the same manual with other boundaries: its oracle holds all of
    # our first chunk (it matches that one best, 0.89) and the start of our second, and the
    # quote comes from that start.
    oracle = f"{first.text} To restart, open the power menu"
    docs = [camera.text, oracle]
    question = "How do I restart the phone?"
    return {
        "id": "0b6d4c1e-7a53-4f0e-9c1a-2f4d6e8a9b10",
        "type": "general",
        "question": question,
        "context": {"title": [["placeholder_title"] * 2], "sentences": [docs]},
        "oracle_context": oracle,
        # The reference keeps the teacher's whitespace, a trailing newline included.
        "cot_answer": f"The manual says ##begin_quote## {QUOTE} ##end_quote##.\n<ANSWER>: "
        "Open the power menu and tap Restart.\n",
        "instruction": "".join(f"<DOCUMENT>{d}</DOCUMENT>\n" for d in docs) + question,
    }


def _export(kb: Any, fmt: str, **kwargs: Any) -> list[dict[str, Any]]:
    _count, lines = qa_export_lines(kb=kb, fmt=fmt, status="all", split="all", **kwargs)
    return [json.loads(line) for line in lines]


def test_a_reference_hf_row_finds_its_oracle_by_its_quotes_and_exports_back_unchanged(
    manual_kb: Any,
) -> None:
    row = _reference_hf_row(manual_kb)
    result = qa_import(kb=manual_kb, data=json.dumps(row) + "\n", filename="ref.hf.jsonl")
    assert result["imported"] == 1, result
    pair = QAPair.objects.get(kb=manual_kb)
    second = Chunk.objects.get(document__name="power.txt", ordinal=1)
    assert pair.oracle_chunk_id == second.pk  # where the quote is, not the longest overlap
    assert pair.quote_status == "verified"
    assert pair.oracle_index == 1 and pair.context_chunk_ids == [None, second.pk]

    [exported] = _export(manual_kb, "hf")
    assert exported == row


def test_reference_chat_and_completion_rows_keep_the_oracle_position(manual_kb: Any) -> None:
    row = _reference_hf_row(manual_kb)
    completion = {"prompt": row["instruction"], "completion": row["cot_answer"] + "<STOP>"}
    chat = {
        "messages": [
            {"role": "system", "content": "The following is a conversation with an AI assistant."},
            {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["cot_answer"]},
        ]
    }
    for layout in (completion, chat):
        assert qa_import(kb=manual_kb, data=json.dumps(layout), filename="ref.jsonl")["imported"]
        pair = QAPair.objects.get(kb=manual_kb)
        assert pair.oracle_index == 1 and pair.quote_status == "verified"
        assert pair.cot_answer == row["cot_answer"]  # no <STOP>, whitespace kept
        pair.delete()  # the same pair in the next layout would be a duplicate


def test_completion_export_ends_with_the_reference_stop_unless_told_otherwise(
    manual_kb: Any,
) -> None:
    row = _reference_hf_row(manual_kb)
    qa_import(kb=manual_kb, data=json.dumps(row), filename="ref.hf.jsonl")
    [with_stop] = _export(manual_kb, "completion")
    assert with_stop == {"prompt": row["instruction"], "completion": row["cot_answer"] + "<STOP>"}
    [without] = _export(manual_kb, "completion", stop="")
    assert without["completion"] == row["cot_answer"]


def test_eval_export_writes_the_reference_eval_layout(manual_kb: Any) -> None:
    row = _reference_hf_row(manual_kb)
    qa_import(kb=manual_kb, data=json.dumps(row), filename="ref.hf.jsonl")
    [exported] = _export(manual_kb, "eval")
    # What the reference's EvalDatasetFormatter computes from the same row.
    reference = {
        "question": row["question"],
        "gold_final_answer": row["cot_answer"].split("<ANSWER>: ")[-1],
        "context": "\n".join(row["instruction"].split("\n")[:-1]),
    }
    assert {k: exported[k] for k in reference} == {
        **reference,
        "gold_final_answer": reference["gold_final_answer"].strip(),
    }
    assert exported["id"] == row["id"] and exported["oracle_context"] == row["oracle_context"]


def test_the_export_command_and_api_offer_the_stop_word(
    manual_kb: Any, tmp_path: Any, client: Any, admin_user: Any
) -> None:
    from django.core.management import call_command

    row = _reference_hf_row(manual_kb)
    qa_import(kb=manual_kb, data=json.dumps(row), filename="ref.hf.jsonl", status="approved")
    QAPair.objects.update(split="train")
    target = tmp_path / "c.jsonl"
    for flags, completion in (
        ([], row["cot_answer"] + "<STOP>"),
        (["--no-completion-stop"], row["cot_answer"]),
    ):
        call_command(
            "export_dataset", "manual", "--format", "completion", "-o", str(target), *flags
        )
        assert json.loads(target.read_text())["completion"] == completion

    client.force_login(admin_user)
    url = "/api/kbs/manual/qa-pairs/export?format=completion"
    for query, ending in (("", "<STOP>"), ("&completion_stop=false", "\n")):
        body = b"".join(client.get(url + query).streaming_content).decode()
        assert json.loads(body)["completion"].endswith(ending)
