"""`retrieval_eval` gold names: the original upload name (``reset#1.txt``, stored sanitised as
``reset_1.txt``) matches; names matching no document are reported, not scored as misses."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def _run(*args: str) -> tuple[list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("retrieval_eval", *args, stdout=out, stderr=err)
    return out.getvalue().strip().splitlines(), err.getvalue()


def test_it_matches_original_names_and_reports_unmatched_ones(eval_kb: Any, tmp_path: Path) -> None:
    from corpus.models import Document

    assert Document.objects.get(original_filename="reset#1.txt").name == "reset_1.txt"
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"question": "How do I reset the television?", "gold": ["reset#1.txt"]})
        + "\n"
        + json.dumps({"question": "What about the manual?", "gold": ["missing#2.pdf"]})
        + "\n"
    )
    lines, err = _run("tv", str(questions), "--mode", "bm25", "--k", "1")
    assert json.loads(lines[-1]) == {"questions": 1, "recall@1": 1.0, "mrr": 1.0}
    assert json.loads(lines[-2]) == {"gold_missing": ["missing#2.pdf"], "skipped_questions": 1}
    assert "missing#2.pdf" in err


def test_it_refuses_a_set_whose_gold_documents_are_all_missing(
    eval_kb: Any, tmp_path: Path
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "Q?", "gold": ["nowhere.pdf"]}) + "\n")
    with pytest.raises(CommandError, match="No question names a gold document"):
        _run("tv", str(questions), "--mode", "bm25")
