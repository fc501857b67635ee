from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from corpus.models import QAPair


def _run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_generates_with_wait_and_prints_a_json_summary(manual_kb, scripted_profiles) -> None:  # type: ignore[no-untyped-def]
    scripted_profiles()
    out, _ = _run(
        "raft_generate",
        "manual",
        "--limit-chunks",
        "2",
        "--questions-per-chunk",
        "2",
        "--wait",
        "--config",
        '{"hard_negative_share": 0}',
    )
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["chunks"] == 2 and summary["rows"] == 4
    assert QAPair.objects.filter(kb=manual_kb).count() == 4
    with pytest.raises(CommandError, match="No knowledge base"):
        _run("raft_generate", "nope", "--wait")
    with pytest.raises(CommandError, match="p must be between"):
        _run("raft_generate", "manual", "--p", "2", "--wait")


def test_it_resumes_a_job_with_its_own_settings_and_generates_nothing_twice(
    manual_kb, scripted_profiles
) -> None:  # type: ignore[no-untyped-def]
    from raftweb.llm.base import BackendUnavailable

    teacher, _judge = scripted_profiles()

    def down(messages):  # type: ignore[no-untyped-def]
        if "Wireless PowerShare" in messages[-1].content:
            raise BackendUnavailable("teacher at http://x is down (HTTP 500)")
        return '["Which key opens the camera here?", "What does the feature do here?"]'

    teacher.script["questions"] = down
    base = ["--questions-per-chunk", "2", "--config", '{"hard_negative_share": 0, "p": 1.0}']
    out, _ = _run("raft_generate", "manual", *base, "--wait")
    first = json.loads(out.strip().splitlines()[-1])
    assert first["status"] == "finished" and first["chunks_failed"] == 1
    assert first["rows"] == 10

    teacher.script.pop("questions")
    out, _ = _run("raft_generate", "manual", "--resume", str(first["job"]), "--wait")
    assert "resuming" in out
    second = json.loads(out.strip().splitlines()[-1])
    assert (second["job"], second["status"]) == (first["job"], "finished")
    assert (second["chunks_done"], second["chunks_failed"], second["rows"]) == (6, 0, 12)
    assert QAPair.objects.filter(job_id=first["job"]).count() == 12
    with pytest.raises(CommandError, match="own settings; drop p"):
        _run("raft_generate", "manual", "--resume", str(first["job"]), "--p", "0.5")
    with pytest.raises(CommandError, match="has no generation job 999"):
        _run("raft_generate", "manual", "--resume", "999")


def test_it_exports_each_format_and_refuses_an_empty_export(
    manual_kb, scripted_profiles, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "out.jsonl"
    with pytest.raises(CommandError, match="Nothing to export"):
        _run("export_dataset", "manual", "--format", "hf", "-o", str(target))
    assert not target.exists()
    scripted_profiles()
    _run(
        "raft_generate",
        "manual",
        "--questions-per-chunk",
        "1",
        "--wait",
        "--config",
        '{"hard_negative_share": 0, "p": 1.0}',
    )
    QAPair.objects.filter(kb=manual_kb, split="train").update(status="approved")
    train = QAPair.objects.filter(kb=manual_kb, split="train").count()
    for fmt, key in (
        ("hf", "instruction"),
        ("chat", "messages"),
        ("completion", "prompt"),
        ("eval", "gold_final_answer"),
    ):
        out, _ = _run("export_dataset", "manual", "--format", fmt, "-o", str(target))
        rows = [json.loads(line) for line in target.read_text().splitlines()]
        assert len(rows) == train and all(key in r for r in rows), fmt
        assert f"Exported {train} row(s)" in out
    _run("export_dataset", "manual", "--format", "hf", "-o", str(target))
    first = json.loads(target.read_text().splitlines()[0])
    assert set(first) == {
        "id",
        "type",
        "question",
        "context",
        "oracle_context",
        "cot_answer",
        "instruction",
    }
    assert (
        first["instruction"].startswith("<DOCUMENT>")
        and first["oracle_context"] in first["context"]["sentences"][0]
    )
    # the eval split never leaks into a train export
    with pytest.raises(CommandError, match="no approved Q&A pairs in the eval split"):
        _run(
            "export_dataset",
            "manual",
            "--format",
            "hf",
            "--split",
            "eval",
            "-o",
            str(tmp_path / "e.jsonl"),
        )
    assert not (tmp_path / "e.jsonl").exists()
    out, _ = _run(
        "export_dataset",
        "manual",
        "--format",
        "eval",
        "--split",
        "eval",
        "--status",
        "all",
        "-o",
        str(tmp_path / "e.jsonl"),
    )
    assert all(
        json.loads(line)["split"] == "eval"
        for line in (tmp_path / "e.jsonl").read_text().splitlines()
    )


def test_it_imports_plain_jsonl_with_gold_and_reports_skipped_lines(
    manual_kb, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "qa.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "question": "How do I turn the phone off?",
                        "answer": "Hold the Side and Volume down keys, then tap Power off.",
                        "gold": ["power"],
                    }
                ),
                "{broken",
                json.dumps(
                    {
                        "question": "How long does a full charge take?",
                        "answer": "About seventy minutes.",
                        "gold": ["battery.txt"],
                    }
                ),
                json.dumps({"question": "Who?", "answer": "x", "gold": ["missing.pdf"]}),
                json.dumps({"answer": "no question"}),
            ]
        )
    )
    out, err = _run("import_qa", "manual", str(path), "--status", "approved", "--split", "train")
    last = json.loads(out.strip().splitlines()[-1])
    assert last["imported"] == 2
    assert [s["line"] for s in last["skipped"]] == [2, 4, 5]
    assert "gold document not found" in last["skipped"][1]["error"]
    pairs = {p.question: p for p in QAPair.objects.filter(kb=manual_kb, source="imported")}
    off = pairs["How do I turn the phone off?"]
    assert off.oracle_chunk is not None and "Power off" in off.oracle_chunk.text
    assert off.status == "approved" and off.split == "train"
    charge = pairs["How long does a full charge take?"]
    assert "seventy minutes" in charge.oracle_text
    assert off.events.filter(action="import").exists()


def test_it_round_trips_an_hf_export_through_import(
    manual_kb, scripted_profiles, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    scripted_profiles()
    _run(
        "raft_generate",
        "manual",
        "--questions-per-chunk",
        "1",
        "--limit-chunks",
        "3",
        "--wait",
        "--config",
        '{"hard_negative_share": 0, "p": 1.0}',
    )
    QAPair.objects.filter(kb=manual_kb).update(status="approved")
    target = tmp_path / "hf.jsonl"
    _run("export_dataset", "manual", "--format", "hf", "--split", "all", "-o", str(target))
    QAPair.objects.filter(kb=manual_kb).delete()
    out, _ = _run("import_qa", "manual", str(target))
    assert json.loads(out.strip().splitlines()[-1]) == {
        "imported": 3,
        "duplicates": 0,
        "skipped": [],
    }
    for pair in QAPair.objects.filter(kb=manual_kb):
        assert (
            pair.oracle_index is not None
            and pair.context_texts[pair.oracle_index] == pair.oracle_text
        )
        assert pair.quote_status == "verified" and pair.status == "pending"


def test_it_imports_csv_and_reports_an_unreadable_file(manual_kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "qa.csv"
    path.write_text(
        'question,answer,gold\n"How do I switch cameras?",Swipe up or down on the preview,camera.txt\n'
        ",no question,\n"
    )
    out, _ = _run("import_qa", "manual", str(path))
    assert json.loads(out.strip().splitlines()[-1]) == {
        "imported": 1,
        "duplicates": 0,
        "skipped": [{"line": 3, "error": "missing question"}],
    }
    with pytest.raises(CommandError, match="cannot read"):
        _run("import_qa", "manual", str(tmp_path / "absent.jsonl"))


def test_it_queues_a_job_for_the_worker_without_wait(
    manual_kb, scripted_profiles, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    scripted_profiles()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        out, _ = _run(
            "raft_generate",
            "manual",
            "--limit-chunks",
            "1",
            "--config",
            '{"hard_negative_share": 0}',
        )
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "queued" and summary["rows"] == 0
    assert len(callbacks) == 1  # the Huey task is enqueued once the job is committed
    callbacks[0]()  # the worker runs it (Huey is immediate in tests)
    from corpus.models import GenerationJob

    assert GenerationJob.objects.get(pk=summary["job"]).status == "finished"


def test_it_takes_every_generation_setting_as_a_flag(manual_kb, scripted_profiles) -> None:  # type: ignore[no-untyped-def]
    """The flags are generated from GenerationConfig; the old names still work."""
    from corpus.models import GenerationJob

    out, _ = _run(
        "raft_generate",
        "manual",
        "--distractors",
        "2",
        "--no-judge",
        "--quote-threshold",
        "0.7",
        "--hard-negative-mode",
        "bm25",
        "--limit-chunks",
        "1",
    )
    job = GenerationJob.objects.get(pk=json.loads(out.strip().splitlines()[-1])["job"])
    assert job.config["num_distractors"] == 2 and job.config["judge_enabled"] is False
    assert job.config["quote_threshold"] == 0.7 and job.config["hard_negative_mode"] == "bm25"
    with pytest.raises(CommandError, match="quote_threshold must be between 0.5 and 1"):
        _run("raft_generate", "manual", "--quote-threshold", "0.2")


def test_importing_the_same_file_twice_adds_nothing(manual_kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "qa.jsonl"
    line = {"question": "How do I restart?", "answer": "Open the power menu.", "gold": ["power"]}
    path.write_text(
        json.dumps(line) + "\n" + json.dumps({**line, "question": "How do I  restart?"})
    )
    out, _ = _run("import_qa", "manual", str(path))
    assert json.loads(out.strip().splitlines()[-1]) == {
        "imported": 1,
        "duplicates": 1,
        "skipped": [],
    }
    out, _ = _run("import_qa", "manual", str(path))
    assert json.loads(out.strip().splitlines()[-1]) == {
        "imported": 0,
        "duplicates": 2,
        "skipped": [],
    }
    assert QAPair.objects.filter(kb=manual_kb).count() == 1
