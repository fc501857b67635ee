"""The persisted, incrementally updated BM25 index."""

from __future__ import annotations

from pathlib import Path

from raftweb.retrieval.bm25 import MAX_SEGMENTS, BM25Index, IndexedChunk

DOCS = [
    "The battery charges wirelessly on the pad",
    "Camera settings let you record HDR10+ video",
    "Turn on location services to use GPS",
    "Wireless PowerShare charges your watch and earbuds",
    "Clean the screen with a soft dry cloth",
]


def _chunks(start: int = 0) -> list[IndexedChunk]:
    return [
        IndexedChunk(
            chunk_id=f"c{i}",
            document_id=i % 3,
            document_name=f"doc{i % 3}.txt",
            text=t,
            page=1,
            start=0,
            end=len(t),
        )
        for i, t in enumerate(DOCS[start:], start=start)
    ]


def test_it_ranks_by_bm25_with_stemming(tmp_path: Path) -> None:
    index = BM25Index(tmp_path / "kb.sqlite3")
    index.add(_chunks())
    hits = index.search("charging wireless", k=3)
    assert [c for c, _ in hits][:2] == ["c3", "c0"] or [c for c, _ in hits][:2] == ["c0", "c3"]
    assert hits[0][1] >= hits[1][1] > 0
    assert index.search("gps", k=5)[0][0] == "c2"
    assert index.search("the and of", k=5) == []  # only stop words


def test_it_adds_and_removes_incrementally_without_rebuilding(tmp_path: Path) -> None:
    index = BM25Index(tmp_path / "kb.sqlite3")
    index.add(_chunks()[:2])
    assert index.search("gps", k=3) == []
    index.add(_chunks(2))
    assert index.search("gps", k=3)[0][0] == "c2"
    removed = index.remove_document(2)  # c2 only (2 % 3 == 2)
    assert removed == 1
    assert index.search("gps", k=3) == []
    assert index.count() == 4
    index.remove_ids(["c0"])
    assert [c for c, _ in index.search("battery charges", k=5)] == ["c3"]


def test_it_reuses_its_in_memory_snapshot_until_the_index_changes(tmp_path: Path) -> None:
    index = BM25Index(tmp_path / "kb.sqlite3")
    index.add(_chunks())
    index.search("camera", k=2)
    first = index._snapshot()
    index.search("video", k=2)
    assert index._snapshot() is first  # queries never rebuild
    index.add([IndexedChunk(chunk_id="new", document_id=9, text="camera lens cleaning")])
    second = index._snapshot()
    assert second is not first
    old_segments = set(first.segments)
    assert all(
        second.segments[s] is first.segments[s] for s in old_segments
    )  # only the new segment loaded


def test_it_persists_and_a_second_process_view_sees_updates(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite3"
    writer = BM25Index(path)
    writer.add(_chunks())
    reader = BM25Index(path)
    assert reader.search("cloth", k=1)[0][0] == "c4"
    writer.add([IndexedChunk(chunk_id="c9", document_id=1, text="microfiber cloth for lenses")])
    assert {c for c, _ in reader.search("cloth", k=5)} == {"c4", "c9"}


def test_it_merges_segments_and_keeps_results(tmp_path: Path) -> None:
    index = BM25Index(tmp_path / "kb.sqlite3")
    for i in range(MAX_SEGMENTS * 3):
        index.add(
            [IndexedChunk(chunk_id=f"x{i}", document_id=i, text=f"topic{i} shared words battery")]
        )
    assert index.segment_count() <= MAX_SEGMENTS
    before = index.search("topic7 battery", k=3)
    index.remove_document(3)
    index.optimize()
    assert index.segment_count() == 1
    assert index.search("topic7 battery", k=3)[0][0] == before[0][0] == "x7"
    assert index.search("topic3", k=3) == []
    assert index.count() == MAX_SEGMENTS * 3 - 1


def test_it_filters_by_document_and_replaces_chunks_by_id(tmp_path: Path) -> None:
    index = BM25Index(tmp_path / "kb.sqlite3")
    index.add(_chunks())
    assert {c for c, _ in index.search("charges", k=5, document_ids=[0])} == {"c0", "c3"}
    assert index.search("charges", k=5, document_ids=[2]) == []
    index.add([IndexedChunk(chunk_id="c3", document_id=0, text="nothing relevant here anymore")])
    assert [c for c, _ in index.search("charges", k=5, document_ids=[0])] == ["c0"]
    stored = index.get(["c3", "missing"])
    assert list(stored) == ["c3"] and stored["c3"].text == "nothing relevant here anymore"


def test_it_tokenizes_index_text_but_stores_display_text(tmp_path: Path) -> None:
    index = BM25Index(tmp_path / "kb.sqlite3")
    index.add(
        [
            IndexedChunk(
                chunk_id="a",
                document_id=1,
                text="Tap the icon.",
                index_text="Bluetooth\nTap the icon.",
            )
        ]
    )
    assert index.search("bluetooth", k=1)[0][0] == "a"
    assert index.get(["a"])["a"].text == "Tap the icon."


def test_it_does_not_leak_a_connection_per_thread(tmp_path: Path) -> None:
    """The ASGI server runs each request in a new thread: searches from 100 short-lived
    threads must not leave 100 open database connections behind."""
    import os
    import threading

    from raftweb.retrieval.bm25 import MAX_IDLE_CONNECTIONS

    index = BM25Index(tmp_path / "bm25.sqlite3")
    index.add(_chunks())
    index.search("battery", 3)
    fds_before = len(os.listdir("/proc/self/fd"))
    results: list[list[tuple[str, float]]] = []
    for _ in range(10):
        threads = [
            threading.Thread(target=lambda: results.append(index.search("wireless charges", 3)))
            for _ in range(10)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 100 and all(r and r[0][0] in {"c0", "c3"} for r in results)
    # SQLite opens up to 3 files per WAL connection (db, -wal, -shm mapping)
    assert len(os.listdir("/proc/self/fd")) - fds_before <= 3 * MAX_IDLE_CONNECTIONS


def test_several_queries_at_once_rank_as_each_alone_from_one_snapshot(tmp_path: Path) -> None:
    index = BM25Index(tmp_path / "kb.sqlite3")
    index.add(_chunks())
    queries = ["charging wireless", "gps", "the and of", "camera video", "cloth screen"]
    alone = [index.search(q, k=3) for q in queries]
    snapshots: list[object] = []
    take = index._snapshot

    def counted() -> object:
        snapshots.append(take())
        return snapshots[-1]

    index._snapshot = counted  # type: ignore[method-assign]
    assert index.search_many(queries, k=3) == alone
    assert len(snapshots) == 1  # one generation check for the whole batch
    assert index.search_many(queries, k=3, document_ids=[2]) == [
        index.search(q, k=3, document_ids=[2]) for q in queries
    ]
    assert index.search_many([], k=3) == []
