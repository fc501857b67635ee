from __future__ import annotations

from raftweb.raft.prompts import (
    PromptSet,
    build_instruction,
    build_messages,
    cot_answer_messages,
    questions_messages,
)


def test_it_builds_the_reference_instruction_layout() -> None:
    out = build_instruction("What is X?", ["doc one", "doc two"])
    assert out == "<DOCUMENT>doc one</DOCUMENT>\n<DOCUMENT>doc two</DOCUMENT>\nWhat is X?"


def test_it_puts_format_rules_in_system_and_instruction_in_user() -> None:
    msgs = build_messages("Q?", ["a"])
    assert [m.role for m in msgs] == ["system", "user"]
    assert "##begin_quote##" in msgs[0].content and "<ANSWER>:" in msgs[0].content
    assert "does not contain" in msgs[0].content
    assert msgs[1].content == build_instruction("Q?", ["a"])
    custom = build_messages("Q?", ["a"], system="You are Bob.")
    assert custom[0].content.startswith("You are Bob.") and "<ANSWER>:" in custom[0].content


def test_it_applies_per_kb_overrides_and_ignores_unknown_keys() -> None:
    prompts = PromptSet.with_overrides(
        {"questions_system": "Write {n} questions about cats.", "nope": "x", "judge_user": ""}
    )
    msgs = questions_messages("chunk text", 4, prompts=prompts)
    assert msgs[0].content == "Write 4 questions about cats."
    assert prompts.judge_user == PromptSet().judge_user
    assert PromptSet.unknown_keys({"nope": 1, "system": "x"}) == ["nope"]


def test_it_survives_an_override_with_stray_braces() -> None:
    prompts = PromptSet.with_overrides({"cot_answer_user": "Q: {question} {oops} C: {context}"})
    msgs = cot_answer_messages("why?", "because", prompts=prompts)
    assert "Q: why?" in msgs[1].content and "C: because" in msgs[1].content
