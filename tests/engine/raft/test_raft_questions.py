from __future__ import annotations

from raftweb.raft.questions import dedupe_questions, parse_questions


def test_it_parses_json_arrays_and_objects() -> None:
    assert parse_questions('Sure!\n["How do I reset it?", "What is the battery size?"]') == [
        "How do I reset it?",
        "What is the battery size?",
    ]
    assert parse_questions('{"questions": [{"question": "Where is the SIM tray?"}]}') == [
        "Where is the SIM tray?"
    ]


def test_it_parses_numbered_and_bulleted_lists_and_drops_preambles() -> None:
    text = (
        "Here are 3 questions:\n1. How do I turn off the phone?\n2) What does the Side key do?\n"
        '- Q3: Can I use two SIM cards?\n* "Where is the volume key?"'
    )
    assert parse_questions(text) == [
        "How do I turn off the phone?",
        "What does the Side key do?",
        "Can I use two SIM cards?",
        "Where is the volume key?",
    ]


def test_it_drops_near_duplicates_and_junk_and_limits() -> None:
    qs = dedupe_questions(
        [
            "How do I turn off the phone?",
            "How do I turn the phone off?",
            "how do i turn off the phone",
        ]
    )
    assert qs == ["How do I turn off the phone?"]
    assert parse_questions("1. ???\n2. #$%^&*\n3. What is Bixby for?", limit=5) == [
        "What is Bixby for?"
    ]
    assert (
        len(
            parse_questions(
                "What color is the phone? How heavy is the battery? Where is the SIM tray?", limit=2
            )
        )
        == 2
    )
    assert parse_questions("") == [] and parse_questions(None) == []


def test_apologies_and_refusals_are_not_questions() -> None:
    assert parse_questions("I'm sorry, but I can't create questions about this?") == []
    assert parse_questions("I am sorry, I cannot do that.\nCan I help with something else?") == []
    assert parse_questions("As an AI, I cannot read documents?") == []
    assert parse_questions('["I cannot answer that?", "What voltage does the charger use?"]') == [
        "What voltage does the charger use?"
    ]
    # A question that merely mentions being sorry is still a question.
    assert parse_questions("1. Why does the manual say sorry for the delay in refunds?") == [
        "Why does the manual say sorry for the delay in refunds?"
    ]
