from __future__ import annotations

from raftweb.raft.matching import best_chunk

CHUNKS = {
    1: "The battery can be charged wirelessly using a Qi certified charger.",
    2: "To take a screenshot, press the Side key and the Volume down key at the same time.",
    3: "Bixby is an intelligent assistant that helps you use the device.",
}


def test_it_prefers_verified_quotes_then_token_overlap() -> None:
    assert (
        best_chunk(
            question="How?",
            answer="x",
            quotes=["press the Side key and the Volume down key"],
            candidates=CHUNKS,
        )
        == 2
    )
    assert (
        best_chunk(
            question="How do I charge the battery wirelessly?",
            answer="Qi charger",
            quotes=[],
            candidates=CHUNKS,
        )
        == 1
    )
    assert best_chunk(question="", answer="", quotes=[], candidates=CHUNKS) is None
    assert best_chunk(question="q", answer="a", quotes=[], candidates={}) is None
