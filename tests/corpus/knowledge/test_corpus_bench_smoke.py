"""The benchmark scripts run end to end on a tiny size and print their JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def _run(script: str) -> list[dict[str, object]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CHROMA_URL")
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_it_runs_the_ingest_benchmark() -> None:
    lines = _run("ingest.py")
    cases = {line["case"]: line for line in lines}
    assert set(cases) == {"parse_chunk_only", "project", "baseline_encode", "ratio"}
    assert (
        cases["project"]["failed"] == 0
        and cases["project"]["chunks"] == cases["baseline_encode"]["chunks"]
    )
    assert float(cases["ratio"]["project_vs_encode_throughput"]) > 0  # type: ignore[arg-type]


def test_it_runs_the_retrieval_benchmark() -> None:
    lines = _run("retrieval.py")
    cases = {line["case"]: line for line in lines}
    assert {"raw_chroma", "dense", "bm25", "hybrid", "summary"} <= set(cases)
    assert all(float(cases[c]["p95_ms"]) > 0 for c in ("raw_chroma", "dense", "bm25", "hybrid"))  # type: ignore[arg-type]


def test_it_runs_the_generation_benchmark_with_its_contract_keys() -> None:
    """bench/generate.py: every case, the issue's ratio keys, and the start-up case."""
    lines = _run("generate.py")
    cases = {line["case"]: line for line in lines}
    assert {
        "plain_asyncio",
        "pipeline",
        "service",
        "service_no_hard_negatives",
        "startup",
        "reference_2_threads",
        "reference_8_threads",
        "ratios",
    } <= set(cases)
    ratios = cases["ratios"]
    assert ratios["hard_negatives_vs_none"] > 0 and ratios["pipeline_vs_reference_best"] > 0
    assert ratios["reference_best_workers"] in (2, 8)
    # The default job keeps hard negatives on: what users run is what is measured.
    assert cases["service"]["hard_negative_share"] > 0
    assert cases["service_no_hard_negatives"]["hard_negative_share"] == 0
    assert cases["service"]["rows"] > 0 and cases["service"]["chunks_failed"] == 0
    startup = cases["startup"]
    assert 0 < startup["first_model_call_s"] <= startup["total_s"]
