from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from raftweb.raft.formats import (
    EXPORTERS,
    Exporter,
    RaftRow,
    UnknownExportFormat,
    get_exporter,
    parse_import,
    register_exporter,
    rows_to_jsonl,
)
from raftweb.registry import Registry, UnknownChoice

ROW = RaftRow(
    id="qa-1",
    question="How do I power off?",
    cot_answer="It says ##begin_quote##tap Power off##end_quote##.\n<ANSWER>: Tap Power off",
    final_answer="Tap Power off",
    context_ids=["c2", "c1"],
    context_texts=["other", "tap Power off"],
    context_titles=["a.txt", "b.txt"],
    oracle_index=1,
    oracle_text="tap Power off",
    oracle_id="c1",
)


def test_it_exports_the_reference_hf_layout() -> None:
    row = json.loads(rows_to_jsonl([ROW], "hf"))
    assert set(row) == {
        "id",
        "type",
        "question",
        "context",
        "oracle_context",
        "cot_answer",
        "instruction",
    }
    assert row["context"] == {
        "title": [["a.txt", "b.txt"]],
        "sentences": [["other", "tap Power off"]],
    }
    assert row["instruction"] == (
        "<DOCUMENT>other</DOCUMENT>\n<DOCUMENT>tap Power off</DOCUMENT>\nHow do I power off?"
    )
    assert row["type"] == "general" and row["oracle_context"] == "tap Power off"


def test_it_exports_chat_completion_and_eval() -> None:
    chat = get_exporter("chat").row(ROW)
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant"]
    assert chat["messages"][2]["content"] == ROW.cot_answer
    comp = get_exporter("completion").row(ROW)
    # The reference's converter ends every completion with its stop word.
    assert comp == {"prompt": ROW.instruction, "completion": ROW.cot_answer + "<STOP>"}
    assert get_exporter("completion", stop="").row(ROW)["completion"] == ROW.cot_answer
    ev = get_exporter("eval").row(ROW)
    assert ev["gold_final_answer"] == "Tap Power off" and ev["oracle_chunk_id"] == "c1"
    assert ev["context"] == "<DOCUMENT>other</DOCUMENT>\n<DOCUMENT>tap Power off</DOCUMENT>"


def test_it_round_trips_hf_chat_and_completion_imports() -> None:
    for fmt in ("hf", "chat", "completion"):
        result = parse_import(rows_to_jsonl([ROW], fmt), filename=f"x.{fmt}.jsonl")
        assert not result.errors, fmt
        [rec] = result.records
        assert rec.question == ROW.question and rec.cot_answer == ROW.cot_answer
        assert rec.final_answer == "Tap Power off" and rec.quotes == ["tap Power off"]
        assert rec.context_texts == ROW.context_texts and rec.source_format == fmt
        assert rec.oracle_index == 1, fmt  # by the oracle text (hf) or by the quotes
    [hf] = parse_import(rows_to_jsonl([ROW], "hf")).records
    assert (hf.id, hf.type, hf.context_titles) == ("qa-1", "general", ["a.txt", "b.txt"])


def test_it_imports_plain_jsonl_with_gold_and_reports_bad_lines() -> None:
    text = "\n".join(
        [
            json.dumps({"question": "Q1?", "answer": "A1", "gold": ["manual.pdf"]}),
            "{not json",
            json.dumps({"question": "Q2?"}),
            "",
            json.dumps(["a list"]),
            json.dumps({"question": "Q3?", "answer": "A3", "gold": "x"}),
            json.dumps({"foo": 1}),
        ]
    )
    result = parse_import(text, filename="in.jsonl")
    assert [(r.line, r.question, r.gold) for r in result.records] == [
        (1, "Q1?", ["manual.pdf"]),
        (6, "Q3?", ["x"]),
    ]
    assert [e.line for e in result.errors] == [2, 3, 5, 7]
    assert "invalid JSON" in result.errors[0].error and "answer" in result.errors[1].error


def test_it_imports_csv_with_line_numbers() -> None:
    text = 'question,answer,gold\n"What, exactly?",Yes,a.txt|b.txt\n,missing question,\nQ3?,A3,\n'
    result = parse_import(text.encode(), filename="qa.csv")
    assert [(r.line, r.gold) for r in result.records] == [(2, ["a.txt", "b.txt"]), (4, [])]
    assert result.records[0].question == "What, exactly?"
    assert [e.as_dict()["line"] for e in result.errors] == [3]
    bad = parse_import("q,a\n1,2\n", filename="qa.csv")
    assert bad.errors[0].line == 1 and not bad.records


def test_exporters_are_chosen_by_name_from_the_shared_registry() -> None:
    assert isinstance(EXPORTERS, Registry)
    # Callers treat it like the dict it replaced: membership and sorted names.
    assert sorted(EXPORTERS) == ["chat", "completion", "eval", "hf"]
    assert "chat" in EXPORTERS and "csv" not in EXPORTERS
    assert type(get_exporter("hf")) is EXPORTERS.get("hf")


def test_an_unknown_format_names_the_choices() -> None:
    with pytest.raises(ValueError) as info:
        get_exporter("csv")
    error = info.value
    assert isinstance(error, UnknownExportFormat) and isinstance(error, UnknownChoice)
    assert str(error) == "unknown export format 'csv'; choose one of: chat, completion, eval, hf"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is UnknownExportFormat and str(copy) == str(error)


def test_it_registers_an_exporter_and_refuses_a_second_one_under_its_name() -> None:
    @register_exporter
    class QuestionsOnly(Exporter):
        name = "test-questions"

        def row(self, row: RaftRow) -> dict[str, Any]:
            return {"question": row.question}

    try:
        assert json.loads(rows_to_jsonl([ROW], "test-questions")) == {"question": ROW.question}

        class Other(QuestionsOnly):
            pass

        with pytest.raises(ValueError, match="already taken"):
            register_exporter(Other)
    finally:
        EXPORTERS.remove("test-questions")
    assert "test-questions" not in EXPORTERS


def test_it_imports_the_reference_eval_layout_as_plain_pairs() -> None:
    line = {
        "question": "How do I power off?",
        "gold_final_answer": "Tap Power off",
        "context": "<DOCUMENT>other</DOCUMENT>\n<DOCUMENT>tap Power off</DOCUMENT>",
    }
    [rec] = parse_import(json.dumps(line)).records
    assert (rec.question, rec.final_answer) == ("How do I power off?", "Tap Power off")
    assert rec.context_texts == ["other", "tap Power off"]
    # What RAFTweb's own eval export writes reads back the same way.
    [again] = parse_import(json.dumps(get_exporter("eval").row(ROW))).records
    assert again.question == ROW.question and again.final_answer == "Tap Power off"
