from __future__ import annotations

from raftweb.raft.splits import eval_count, row_split, split_documents


def test_it_splits_by_document_deterministically() -> None:
    docs = [f"doc{i}" for i in range(30)]
    a = split_documents(docs, seed=1)
    assert a == split_documents(list(reversed(docs)), seed=1)
    assert sum(v == "eval" for v in a.values()) == 3
    assert a != split_documents(docs, seed=2)


def test_it_holds_out_at_least_one_document_and_keeps_existing_assignments() -> None:
    assert eval_count(1) == 1 and eval_count(2) == 1 and eval_count(5) == 1 and eval_count(0) == 0
    first = split_documents(["a", "b", "c"], seed=0)
    assert list(first.values()).count("eval") == 1
    later = split_documents(["a", "b", "c", "d", "e", "f"], seed=0, existing=first)
    for key, split in first.items():
        assert later[key] == split


def test_a_row_is_eval_when_any_document_it_shows_is_eval() -> None:
    splits = {1: "train", 2: "eval", 3: "train"}
    assert row_split([1, 3], splits) == "train"
    assert row_split([1, 2, 3], splits) == "eval"
    assert row_split([2], splits) == "eval"
    # Generation's rule (the oracle document's split) is the one-document case.
    assert row_split([3], splits) == splits[3]
    # No document, or documents that have no split yet, make a training row.
    assert row_split([], splits) == "train"
    assert row_split([9, None], splits) == "train"
    # Keys are matched as given and as strings (JSON-stored ids come back as strings).
    assert row_split(["2"], splits) == "eval"
    assert row_split([2], {"2": "eval"}) == "eval"
