from __future__ import annotations

from raftweb.raft.quotes import merge_spans, quoted_doc_keys, quoted_spans, verify_quotes

DOC = "To turn off the device,\n  press and hold the Side key\tand the Volume down key.\nThen tap Power off."


def test_it_finds_exact_quotes_with_positions_in_the_original_text() -> None:
    [check] = verify_quotes(["Press and HOLD the side key and the volume down key"], {"d": DOC})
    assert check.verified and check.doc_key == "d" and check.score == 1.0
    assert DOC[check.start : check.end] == "press and hold the Side key\tand the Volume down key"


def test_it_accepts_small_typos_and_rejects_invented_text() -> None:
    checks = verify_quotes(
        ["press and hold the Side kye and the Volume down key", "the battery lasts ten days"],
        {"d": DOC, "other": "Unrelated text about cameras and photos."},
    )
    assert checks[0].verified and checks[0].doc_key == "d" and 0.9 <= checks[0].score < 1.0
    assert "Side" in DOC[checks[0].start : checks[0].end]
    assert not checks[1].verified and checks[1].score < 0.9


def test_it_picks_the_document_that_was_really_quoted() -> None:
    docs = {"a": "Cats sleep a lot during the day.", "b": DOC}
    checks = verify_quotes(["Then tap Power off.", "cats sleep a lot"], docs)
    assert [c.doc_key for c in checks] == ["b", "a"]
    assert quoted_doc_keys(checks) == ["b", "a"]


def test_it_handles_curly_quotes_ellipses_and_long_or_empty_quotes() -> None:
    doc = "He said \u201chello\u201d to the crowd. Later, everyone went home for dinner."
    [curly, elided, longer, empty] = verify_quotes(
        [
            '"hello" to the crowd',
            "He said \u201chello\u201d to the crowd ... everyone went home",
            doc + " and then much more text that is not in the document at all",
            "  ",
        ],
        {"x": doc},
    )
    assert curly.verified
    assert elided.verified and doc[elided.start : elided.end].startswith("He said")
    assert doc[elided.start : elided.end].endswith("went home")
    assert not longer.verified
    assert not empty.verified and empty.doc_key is None


def test_it_gives_the_spans_verified_quotes_were_found_at_and_merges_them() -> None:
    checks = verify_quotes(
        ["press and hold the Side key", "Then tap Power off.", "no such"], {"d": DOC}
    )
    stored = [c.as_dict() for c in checks]
    spans = quoted_spans(checks, "d")
    assert spans == quoted_spans(stored, "d") and len(spans) == 2
    assert [DOC[a:b] for a, b in spans] == ["press and hold the Side key", "Then tap Power off."]
    assert quoted_spans(stored, "other") == []
    assert merge_spans([(1, 4), (3, 6), (6, 7), (9, 3), (-5, 0), (8, 99)], 10) == [(1, 7), (8, 10)]
