from __future__ import annotations

from raftweb.raft.answer import format_answer, parse_answer


def test_it_parses_reasoning_quotes_and_final_answer() -> None:
    text = (
        "The manual says ##begin_quote##Press and hold the Side key##end_quote## and then "
        "##begin_quote##tap Power off##end_quote##.\n<ANSWER>: Hold the Side key, tap Power off"
    )
    parsed = parse_answer(text)
    assert parsed.parsed_ok
    assert parsed.final == "Hold the Side key, tap Power off"
    assert parsed.quotes == ["Press and hold the Side key", "tap Power off"]
    assert parsed.reasoning.startswith("The manual says")
    assert not parsed.refusal


def test_it_uses_the_last_answer_tag_and_tolerates_variants() -> None:
    parsed = parse_answer("End with <ANSWER>: like this. Reasoning... < answer > : 42")
    assert parsed.final == "42" and parsed.parsed_ok


def test_it_detects_refusals() -> None:
    parsed = parse_answer("Nothing relevant.\n<ANSWER>: The context does not contain the answer.")
    assert parsed.refusal and parsed.parsed_ok
    assert parse_answer("<ANSWER>: I don't know").refusal
    assert not parse_answer("<ANSWER>: Paris").refusal


def test_it_never_raises_on_gibberish() -> None:
    for junk in ["", None, "ñ§¶•ªº–≠ qwe ##begin_quote## unterminated", "<ANSWER>:", "\x00" * 10]:
        parsed = parse_answer(junk)  # type: ignore[arg-type]
        assert not parsed.parsed_ok
        assert parsed.final is None
    assert parse_answer("x ##begin_quote## unterminated").quotes == ["unterminated"]


def test_it_rebuilds_an_answer_from_parts() -> None:
    again = parse_answer(format_answer("Because.", "Yes"))
    assert again.final == "Yes" and again.reasoning == "Because."
