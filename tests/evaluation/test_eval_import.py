"""`manage.py eval_import`: open questions with gold names, multiple choice, the RAFT reference
script's eval format, and the round trip from RAFTweb's own `--format eval` export."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from evaluation.models import EvalRun, QuestionSet

pytestmark = pytest.mark.django_db


def _import(*args: str) -> tuple[dict[str, Any], str]:
    out, err = StringIO(), StringIO()
    call_command("eval_import", *args, stdout=out, stderr=err)
    return json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue()


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_it_imports_the_three_shapes_and_reports_bad_lines(eval_kb: Any, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "set.jsonl",
        [
            {"question": "How to reset?", "answer": "Hold power", "gold": ["reset#1.txt"]},
            {"question": "Which key?", "options": ["Home", "Back", "Menu"], "correct": "b"},
            # the RAFT reference script's eval layout
            {"question": "How long?", "gold_final_answer": "two years",
             "context": "<DOCUMENT>The warranty covers two years.</DOCUMENT>\n"},
            {"question": "Where?", "answer": "x", "gold": "gone.pdf"},
            {"question": "No answer"},
            {"question": "Bad", "options": ["a", "b"], "correct": "z"},
            "not json",
        ],
    )  # fmt: skip
    result, err = _import("tv", str(path), "--name", "external")
    assert result["questions"] == 4 and result["mcq"] == 1 and result["skipped"] == 3
    assert result["gold_missing"] == ["gone.pdf"] and "gone.pdf" in err
    assert ".jsonl:5: skipped: missing answer" in err and ".jsonl:7: skipped" in err
    items = QuestionSet.objects.get(kb=eval_kb, name="external").items
    assert items[1]["correct"] == 1 and items[1]["answer"] == "Back"
    assert items[2]["answer"] == "two years" and items[2]["shape"] == "reference"
    with pytest.raises(CommandError, match="already has a question set"):
        _import("tv", str(path), "--name", "external")
    empty = _write(tmp_path / "empty.jsonl", ['{"question": "only"}'])
    with pytest.raises(CommandError, match="No usable question"):
        _import("tv", str(empty))


def test_it_round_trips_raftwebs_eval_export_in_the_reference_layout(
    eval_kb: Any, student_llm: Any, judge_scripted: Any, tmp_path: Path, run_evaluate: Any
) -> None:
    from corpus.models import QAPair

    exported = tmp_path / "eval.jsonl"
    call_command(
        "export_dataset", "tv", "--format", "eval", "--split", "eval", "-o", str(exported),
        stdout=StringIO(),
    )  # fmt: skip
    lines = [json.loads(x) for x in exported.read_text().splitlines()]
    assert len(lines) == QAPair.objects.filter(kb=eval_kb, split="eval").count() == 4
    for line in lines:
        # The reference's keys, with RAFTweb's beside them.
        assert {"question", "gold_final_answer", "context"} <= set(line)
        assert "oracle_chunk_id" in line and "refusal" in line
    result, _ = _import("tv", str(exported), "--name", "roundtrip")
    assert result["questions"] == 4 and result["skipped"] == 0 and result["gold_missing"] == []
    items = QuestionSet.objects.get(name="roundtrip").items
    pairs = {p.question: p for p in QAPair.objects.filter(kb=eval_kb)}
    for item in items:
        pair = pairs[item["question"]]
        assert item["answer"] == pair.final_answer and item["refusal"] == pair.refusal
    report, _, _ = run_evaluate("tv", "--set", "roundtrip", "--config", "emb=base,gen=base",
                                "--mode", "bm25", "--wait")  # fmt: skip
    counts = report["configs"][0]["counts"]
    # Each non-refusal row's oracle chunk names its document: all three are scored for recall.
    assert counts["recall@k"]["den"] == 3 and counts["refusal_accuracy"]["den"] == 1
    assert EvalRun.objects.get().source == "set roundtrip"
