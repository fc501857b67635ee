from __future__ import annotations

from raftweb.raft.judge import judge_messages, parse_judge


def test_it_parses_json_and_text_scores() -> None:
    v = parse_judge('```json\n{"score": 4, "reason": "Correct and faithful."}\n```')
    assert v is not None and v.score == 4 and v.reason == "Correct and faithful."
    v = parse_judge("Score: 2\nReason: the answer invents a date.")
    assert v is not None and v.score == 2 and v.reason == "the answer invents a date."
    assert parse_judge("I'd give it 5/5, great pair.").score == 5  # type: ignore[union-attr]
    assert parse_judge("3").score == 3  # type: ignore[union-attr]


def test_it_returns_none_instead_of_inventing_a_score() -> None:
    for bad in [
        "",
        None,
        "looks fine to me",
        '{"score": 0}',
        '{"score": 9, "reason": "x"}',
        "Score: 8/10",
        '{"score": "great"}',
        "ñ¶§ gibberish",
    ]:
        assert parse_judge(bad) is None, bad  # type: ignore[arg-type]


def test_it_builds_the_judge_prompt() -> None:
    msgs = judge_messages(question="Q?", answer="A", oracle="DOC")
    assert "DOC" in msgs[1].content and "Q?" in msgs[1].content and '"score"' in msgs[1].content
