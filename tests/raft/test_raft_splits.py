from __future__ import annotations

from raftweb.raft.splits import eval_count, split_documents


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
