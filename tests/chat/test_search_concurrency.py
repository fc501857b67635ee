"""Concurrent chat turns' queries meet in one encoder batch: a search waits for the encoder as
a coroutine and holds a search thread only for its index lookups."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def batch_sizes(batcher: Any) -> Iterator[list[int]]:
    """The size of every batch ``batcher`` runs inside the block (the real work still runs)."""
    sizes: list[int] = []
    run = batcher.fn

    def recording(items: list[Any]) -> Any:
        sizes.append(len(items))
        return run(items)

    batcher.fn = recording
    try:
        yield sizes
    finally:
        batcher.fn = run


@pytest.mark.django_db(transaction=True)
def test_concurrent_turns_share_encoder_batches_beyond_the_pool_size(
    make_kb: Any, settings: Any
) -> None:
    from chat import services
    from corpus.knowledge.indexes import kb_embedder

    settings.SEARCH_THREADS = 2
    services._search_pool.cache_clear()
    try:
        kb = make_kb()
        search = services.kb_searcher(kb)
        batcher = kb_embedder(kb).query_batcher
        questions = [f"How long is the warranty for case {i}?" for i in range(16)]

        async def main() -> list[Any]:
            return await asyncio.gather(*(search(q) for q in questions))

        asyncio.run(main())  # the model is loaded and warm
        with batch_sizes(batcher) as sizes:
            results = asyncio.run(main())
    finally:
        services._search_pool.cache_clear()
    assert sum(sizes) == 16
    # A thread held while waiting for the encoder would cap every batch at the pool's 2.
    assert max(sizes) > 2, sizes
    assert all(hits and "warranty" in hits[0].text.lower() for hits in results)


@pytest.mark.django_db(transaction=True)
def test_concurrent_turns_share_index_lookups_and_get_what_a_lone_search_gets(
    make_kb: Any,
) -> None:
    from chat import services
    from corpus.knowledge.search import kb_search
    from raftweb.retrieval.retriever import LOOKUPS

    kb = make_kb()
    search = services.kb_searcher(kb)
    questions = [f"How long is the warranty for case {i}?" for i in range(12)]
    questions += ["How do I reset the television?"] * 4

    async def main() -> list[Any]:
        return await asyncio.gather(*(search(q) for q in questions))

    asyncio.run(main())  # the model is loaded and warm
    with batch_sizes(LOOKUPS) as sizes:
        results = asyncio.run(main())
    assert sum(sizes) == len(questions)
    assert max(sizes) > 1, sizes  # one vector-store call served several searches
    # Batched lookups answer each query as a search of its own would.
    for question, hits in zip(questions, results, strict=True):
        alone = kb_search(kb=kb, query=question, mode="hybrid", k=services.TOP_K)
        assert [h.chunk_id for h in hits] == [h.chunk_id for h in alone], question


@pytest.mark.django_db(transaction=True)
def test_concurrent_api_searches_share_index_lookups_and_keep_their_filters(
    make_kb: Any,
) -> None:
    """Searches from request threads (the API, the search page) meet in the same lookup
    batches as chat turns; a document filter stays its own search's."""
    from concurrent.futures import ThreadPoolExecutor

    from corpus.knowledge.search import kb_search, kb_search_many
    from corpus.models import Document
    from raftweb.retrieval.retriever import LOOKUPS

    kb = make_kb()
    warranty = Document.objects.get(kb=kb, name="warranty.txt").pk
    asks = [(f"How long is the warranty for case {i}?", None) for i in range(10)]
    asks += [("How do I reset the television?", None)] * 3
    asks += [("How do I reset the television?", [warranty])] * 3  # filtered to the other doc

    def one(ask: tuple[str, list[int] | None]) -> list[Any]:
        return kb_search(kb=kb, query=ask[0], mode="hybrid", k=3, document_ids=ask[1])

    with ThreadPoolExecutor(len(asks)) as pool:
        list(pool.map(one, asks))  # the model is loaded and warm
        with batch_sizes(LOOKUPS) as sizes:
            results = list(pool.map(one, asks))
    assert sum(sizes) == len(asks)
    assert max(sizes) > 1, sizes  # one vector-store call and BM25 snapshot served several
    for (question, docs), hits in zip(asks, results, strict=True):
        # As the unbatched path (one search_many call of its own) answers it.
        alone = kb_search_many(kb=kb, queries=[question], mode="hybrid", k=3, document_ids=docs)
        assert [h.chunk_id for h in hits] == [h.chunk_id for h in alone[0]], question
        if docs:
            assert hits and {h.document_id for h in hits} == {warranty}
