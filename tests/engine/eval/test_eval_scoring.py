"""Per-question scoring, configuration strings, gold-name matching and the soft judge rule."""

from __future__ import annotations

import pytest

from raftweb.errors import Invalid
from raftweb.eval.configs import parse_config, parse_configs
from raftweb.eval.gold import DocName, gold_index, match_gold
from raftweb.eval.judge import is_correct, parse_correctness, soft_correct
from raftweb.eval.scoring import (
    CitedQuote,
    QuestionScore,
    QuestionSpec,
    document_rank,
    needs_judge,
    score_answer,
    score_retrieval,
)

RAW = (
    "The manual says ##begin_quote##hold the power button##end_quote## for ten seconds."
    "\n<ANSWER>: hold the power button"
)


def test_it_scores_a_parsed_answer_that_quotes_the_oracle() -> None:
    spec = QuestionSpec(
        "How to reset?", gold_answer="Hold the power button", gold_doc_ids=frozenset({7})
    )
    score = QuestionScore()
    score_retrieval(spec, [3, 7, 7, 9], score)
    score_answer(
        spec, raw=RAW, final="hold the power button", citations=[CitedQuote(True, 7)], score=score
    )
    assert score.gold_rank == 2 and score.oracle_retrieved is True
    assert score.parse_ok is True and score.correct_reference is True
    assert score.exact_match == 1.0 and score.f1 == 1.0 and score.rouge_l == 1.0
    assert (score.quotes_total, score.quotes_verified) == (1, 1)
    assert needs_judge(spec, score)


def test_it_scores_an_unparsed_answer_that_quotes_another_document() -> None:
    spec = QuestionSpec("Q?", gold_answer="ten", gold_doc_ids=frozenset({1}))
    score = QuestionScore()
    score_answer(
        spec,
        raw="blah blah",
        final="blah blah",
        citations=[CitedQuote(True, 2), CitedQuote(False, None)],
        score=score,
    )
    assert score.parse_ok is False and score.correct_reference is False
    assert (score.quotes_total, score.quotes_verified) == (2, 1)
    assert score.exact_match == 0.0


def test_it_scores_refusal_rows_by_refusal_only() -> None:
    spec = QuestionSpec("Q?", refusal=True)
    score = QuestionScore()
    score_answer(
        spec,
        raw="<ANSWER>: The context does not contain the answer.",
        final="The context does not contain the answer.",
        citations=[],
        score=score,
    )
    assert score.refusal_correct is True and score.exact_match is None
    assert not needs_judge(spec, score)


def test_it_tells_whether_the_oracle_chunk_itself_was_retrieved() -> None:
    spec = QuestionSpec("Q?", gold_doc_ids=frozenset({7}), oracle_chunk="70")
    score = QuestionScore()
    score_retrieval(spec, [7, 8], score, ["71", "80"])
    assert score.oracle_retrieved is True and score.oracle_chunk_retrieved is False
    score_retrieval(spec, [7], score, ["70"])
    assert score.oracle_chunk_retrieved is True


def test_it_ranks_documents_not_chunks() -> None:
    assert document_rank([5, 5, 5, 8], frozenset({8})) == 2
    assert document_rank([5], frozenset({8})) is None


def test_it_applies_the_soft_rule() -> None:
    assert is_correct(4) is True and is_correct(3) is False and is_correct(None) is None
    assert soft_correct(hard=False, oracle_retrieved=False, refused=True) is True
    assert soft_correct(hard=False, oracle_retrieved=True, refused=True) is False
    assert soft_correct(hard=None, oracle_retrieved=False, refused=True) is None
    verdict = parse_correctness('{"score": 5, "reason": "same facts"}')
    assert verdict is not None and verdict.score == 5 and verdict.reason == "same facts"


def test_it_parses_configuration_strings() -> None:
    cfg = parse_config("emb=version:3, gen=profile:judge,k=3,mode=bm25")
    assert (cfg.emb, cfg.gen, cfg.k, cfg.mode) == ("version:3", "profile:judge", 3, "bm25")
    assert cfg.label == "emb=version:3,gen=profile:judge,mode=bm25,k=3"
    assert parse_config("emb=base,gen=base").label == "emb=base,gen=base"
    for bad in ("emb=tuned,gen=base", "gen=version:", "k=0", "emb", "color=red", "mode=fuzzy"):
        with pytest.raises(Invalid):
            parse_config(bad)
    with pytest.raises(Invalid, match="twice"):
        parse_configs(["emb=base,gen=base", "gen=base, emb=base"])


def test_it_matches_gold_names_by_original_and_stored_name() -> None:
    index = gold_index(
        [DocName(1, "manual_2.pdf", "manual#2.pdf"), DocName(2, "Reset.txt", "Reset.txt")]
    )
    found = match_gold(["manual#2.pdf", "reset", "manual_2", "missing.pdf"], index)
    assert found.by_name["manual#2.pdf"] == {1}
    assert found.by_name["reset"] == {2} and found.by_name["manual_2"] == {1}
    assert found.unmatched == ("missing.pdf",)
    assert found.doc_ids == {1, 2}
