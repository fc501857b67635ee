"""One evidence rule and one quote verdict, for generation and for re-verification alike.

A row's quotes must come from the oracle, except in a refusal row (or a row without oracle
text), whose quotes come from the context it was shown. Generation and the reviewer-edit path
both call :func:`check_row_quotes` with the job's threshold, so re-checking an unchanged row
never flips its quote status.
"""

from __future__ import annotations

import pytest

from raftweb.raft.evidence import (
    RowQuoteVerdict,
    check_row_quotes,
    context_key,
    oracle_key,
    quote_status,
    quote_threshold_of,
    row_evidence,
)
from raftweb.raft.pipeline import ChunkInput, ChunkStore, GenerationConfig, run_chunks
from raftweb.raft.quotes import DEFAULT_QUOTE_THRESHOLD, QuoteCheck

ORACLE = "Press and hold the Side key and the Volume down key. Then tap Power off."
DISTRACTOR = "Cameras store photos in the gallery. Videos are kept for thirty days."
TEXTS = {
    1: ORACLE,
    2: DISTRACTOR,
    3: "The battery charges to eighty percent in forty minutes with the fast charger.",
    4: "Night mode dims the screen and warms the colours after sunset.",
}
STORE = ChunkStore(pool=list(TEXTS), text_of=TEXTS.__getitem__)


def test_the_evidence_rule() -> None:
    ctx = dict(context_ids=[2, None, 1], context_texts=[DISTRACTOR, "loose text", ORACLE])
    # An answering row quotes the oracle (even when its context omits it).
    assert row_evidence(refusal=False, oracle_id=1, oracle_text=ORACLE, **ctx) == {"1": ORACLE}
    assert row_evidence(refusal=False, oracle_id=None, oracle_text=ORACLE, **ctx) == {
        "oracle": ORACLE
    }
    # A refusal row, or a row with no oracle text, quotes its context; an id-less context
    # document is keyed by its position.
    refusal = {"2": DISTRACTOR, "ctx1": "loose text", "1": ORACLE}
    assert row_evidence(refusal=True, oracle_id=1, oracle_text=ORACLE, **ctx) == refusal
    assert row_evidence(refusal=False, oracle_id=1, oracle_text="", **ctx) == refusal
    # Texts without ids (or ids missing at the end) are still evidence.
    assert row_evidence(
        refusal=True, oracle_id=None, oracle_text="", context_ids=[], context_texts=["a", "b"]
    ) == {"ctx0": "a", "ctx1": "b"}
    assert context_key(7, 0) == "7" and context_key(None, 3) == "ctx3"
    assert oracle_key(0) == "0" and oracle_key(None) == "oracle" and oracle_key("") == "oracle"


def test_the_status_of_a_set_of_checks() -> None:
    ok = QuoteCheck("a", True, "d", 0, 1, 1.0)
    bad = QuoteCheck("b", False, None, None, None, 0.2)
    assert quote_status([]) == "none"
    assert quote_status([ok, ok]) == "verified"
    assert quote_status([ok, bad]) == "unverified"


def test_the_threshold_is_honoured() -> None:
    # A loose paraphrase of the oracle: close (about 0.87), not exact.
    answer = (
        "It says ##begin_quote##Push and hold the side button and the volume down key"
        "##end_quote##.\n<ANSWER>: Hold both keys."
    )
    row = dict(
        cot_answer=answer,
        refusal=False,
        oracle_id=1,
        oracle_text=ORACLE,
        context_ids=[1, 2],
        context_texts=[ORACLE, DISTRACTOR],
    )
    lax = check_row_quotes(**row, threshold=0.6)
    strict = check_row_quotes(**row, threshold=0.9)
    assert 0.6 <= lax.checks[0].score < 0.9
    assert lax.status == "verified" and strict.status == "unverified"
    assert lax.checks[0].doc_key == "1"
    assert check_row_quotes(**row).status == strict.status  # the default is the strict 0.9
    assert DEFAULT_QUOTE_THRESHOLD == GenerationConfig().quote_threshold == 0.9


def test_a_verdict_carries_the_parsed_answer() -> None:
    verdict = check_row_quotes(
        cot_answer="No quote here.\n<ANSWER>: 42",
        refusal=False,
        oracle_id=1,
        oracle_text=ORACLE,
        context_ids=[1],
        context_texts=[ORACLE],
    )
    assert isinstance(verdict, RowQuoteVerdict)
    assert verdict.status == "none" and verdict.checks == [] and verdict.check_dicts() == []
    assert verdict.parsed.final == "42" and verdict.parsed.parsed_ok
    assert verdict.evidence == {"1": ORACLE}


def test_a_row_with_no_evidence_has_no_checks() -> None:
    verdict = check_row_quotes(
        cot_answer="##begin_quote##anything##end_quote##<ANSWER>: x",
        refusal=True,
        oracle_id=None,
        oracle_text="",
        context_ids=[],
        context_texts=[],
    )
    assert verdict.status == "none" and verdict.checks == []


@pytest.mark.parametrize("threshold", [0.6, 0.9])
def test_generation_and_re_verification_give_the_same_verdict(scripted, threshold) -> None:  # type: ignore[no-untyped-def]
    """A generated row re-checked as the review page re-checks it keeps its quote verdict."""
    near = "Push and hold the side button and the volume down key"  # scores about 0.87
    answers = iter(
        [
            f"The text says ##begin_quote##{near}##end_quote##.\n<ANSWER>: Hold both keys.",
            "It says ##begin_quote##Then tap Power off.##end_quote##\n<ANSWER>: Tap Power off.",
            "##begin_quote##the moon is cheese##end_quote## <ANSWER>: cheese",
        ]
    )
    teacher = scripted()
    teacher.script["answer"] = lambda m: next(answers)
    teacher.script["refusal"] = lambda m: (
        "The context only says ##begin_quote##Cameras store photos in the gallery.##end_quote##"
        "\n<ANSWER>: The context does not contain the answer."
    )
    rows = []
    for config, chunk_id in (
        (GenerationConfig(questions_per_chunk=3, p=1.0, max_concurrency=1), 1),
        (GenerationConfig(questions_per_chunk=2, p=0.0, refusal_share=1.0), 3),
    ):
        cfg = GenerationConfig.from_dict(config.to_dict() | {"quote_threshold": threshold})
        chunk = ChunkInput(id=chunk_id, text=TEXTS[chunk_id], hard_negatives=(2,))
        [res] = run_chunks([chunk], teacher=teacher, judge=None, config=cfg, store=STORE)
        assert not res.error
        rows += [(chunk_id, row, cfg) for row in res.rows]
    assert {row.refusal for _, row, _ in rows} == {True, False}
    for chunk_id, row, cfg in rows:
        # What the review page stores and later re-checks (QAPair fields).
        again = check_row_quotes(
            cot_answer=row.cot_answer,
            refusal=row.refusal,
            oracle_id=chunk_id,
            oracle_text=TEXTS[chunk_id],
            context_ids=row.context_ids,
            context_texts=[TEXTS[c] for c in row.context_ids],
            threshold=quote_threshold_of(cfg.to_dict()),
        )
        assert again.check_dicts() == row.quote_checks
        assert again.status == row.quote_status
        assert again.parsed.parsed_ok == row.parsed_ok
    # The near copy passes at 0.6 and fails at 0.9; a refusal quotes its distractor.
    by_kind = {
        (
            "near"
            if near in row.cot_answer
            else "cheese"
            if "cheese" in row.cot_answer
            else "refusal"
            if row.refusal
            else "exact"
        ): row.quote_status
        for _, row, _ in rows
    }
    assert by_kind == {
        "near": "verified" if threshold == 0.6 else "unverified",
        "exact": "verified",
        "cheese": "unverified",
        "refusal": "verified",
    }


def test_it_reads_the_threshold_a_job_stored() -> None:
    assert quote_threshold_of({"quote_threshold": 0.75}) == 0.75
    assert quote_threshold_of({"quote_threshold": "0.8"}) == 0.8
    for broken in (None, {}, {"quote_threshold": None}, {"quote_threshold": "x"}):
        assert quote_threshold_of(broken) == DEFAULT_QUOTE_THRESHOLD
    # Out-of-range values are clamped to the bounds a job accepts.
    assert quote_threshold_of({"quote_threshold": 0.1}) == 0.5
    assert quote_threshold_of({"quote_threshold": 7}) == 1.0
