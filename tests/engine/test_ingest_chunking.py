"""Chunking: exact offsets, token budgets, boundary preference, overlap, hashes, speed."""

from __future__ import annotations

import time

import pytest

from raftweb.ingest import (
    ParsedDocument,
    Section,
    chunk_document,
    chunkers,
    content_hash,
    parse_bytes,
    whitespace_token_offsets,
)
from raftweb.ingest.chunking import Chunker


def _paragraph(i: int, words: int = 40) -> str:
    body = " ".join(f"word{i}x{j}" for j in range(words - 1))
    return f"{body} end{i}."


def test_it_keeps_exact_character_offsets_and_pages() -> None:
    doc = ParsedDocument(
        kind="pdf",
        sections=[
            Section(text="\n\n".join(_paragraph(i) for i in range(6)), page=1),
            Section(text="\n\n".join(_paragraph(i) for i in range(6, 12)), page=2),
        ],
    )
    chunks = chunk_document(doc, size=100, overlap=10)
    assert len(chunks) > 4
    full = doc.text
    for c in chunks:
        assert full[c.start : c.end] == c.text
        assert c.hash == content_hash(c.text)
        assert c.token_count == len(whitespace_token_offsets(c.text))
        assert c.token_count <= 100
    assert {c.page for c in chunks} == {1, 2}
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_it_prefers_paragraph_boundaries() -> None:
    text = "\n\n".join(_paragraph(i, words=30) for i in range(10))  # 31 tokens per paragraph
    doc = ParsedDocument(kind="text", sections=[Section(text=text)])
    chunks = chunk_document(doc, size=100, overlap=0)
    for c in chunks[:-1]:
        assert c.text.endswith("."), c.text[-30:]
        assert text[c.end : c.end + 2] == "\n\n"


def test_it_falls_back_to_sentence_boundaries_and_overlaps() -> None:
    sentences = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(80))
    doc = ParsedDocument(kind="text", sections=[Section(text=sentences)])
    chunks = chunk_document(doc, size=60, overlap=10)
    assert len(chunks) > 3
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.text.endswith(".")
        assert b.start < a.end  # the windows overlap
        assert a.end - b.start < len(a.text)


def test_it_cuts_text_without_boundaries_into_full_windows() -> None:
    doc = ParsedDocument(kind="text", sections=[Section(text="-" * 1000)])
    chunks = chunk_document(doc, size=64, overlap=8)
    assert all(c.token_count <= 64 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == 1000


def test_it_carries_the_section_title_into_the_index_text() -> None:
    text = "Battery\n\n" + "\n\n".join(_paragraph(i) for i in range(8))
    doc = ParsedDocument(kind="text", sections=[Section(text=text, title="Battery")])
    chunks = chunk_document(doc, size=60, overlap=6)
    assert chunks[0].index_text == chunks[0].text
    assert all(c.index_text.startswith("Battery") for c in chunks)
    assert not chunks[2].text.startswith("Battery")


def test_it_has_a_chunker_registry() -> None:
    assert {"token", "record"} <= set(chunkers.names())
    assert isinstance(chunkers.get("token"), Chunker)
    with pytest.raises(KeyError, match="unknown chunker"):
        chunkers.get("nope")


def test_it_tokenizes_once_per_section_and_is_fast() -> None:
    calls: list[int] = []

    def counting(text: str) -> list[tuple[int, int]]:
        calls.append(len(text))
        return whitespace_token_offsets(text)

    text = "\n\n".join(
        " ".join(f"tok{j}" for j in range(50)) + "." for _ in range(4000)
    )  # ~200k tokens
    doc = parse_bytes(text.encode(), "big.txt")
    started = time.perf_counter()
    chunks = chunk_document(doc, size=300, overlap=30, token_offsets=counting)
    elapsed = time.perf_counter() - started
    assert calls == [len(doc.sections[0].text)]
    assert len(chunks) > 600
    assert elapsed < 5.0


def test_it_counts_tokens_with_the_embedding_tokenizer() -> None:
    from raftweb.retrieval import load_embedder

    embedder = load_embedder()
    text = "Unbelievably, the S10's Wireless PowerShare charges Galaxy Buds. " * 40
    doc = parse_bytes(text.encode(), "t.txt")
    chunks = chunk_document(doc, size=50, overlap=5, token_offsets=embedder.token_offsets)
    for c in chunks:
        assert doc.text[c.start : c.end] == c.text
        assert embedder.count_tokens(c.text) <= 50


def test_it_caps_chunks_at_what_the_embedding_model_reads() -> None:
    """A 300-token chunk size with all-MiniLM-L6-v2 (256 word pieces with [CLS] and [SEP]): every
    chunk's index text - section title included - fits, so the model truncates nothing."""
    from raftweb.ingest.chunking import capped_chunk_size
    from raftweb.retrieval import load_embedder

    embedder = load_embedder()
    assert embedder.max_input_tokens == 254
    text = " ".join(f"Setting{i} toggles the Bixby routine number {i}." for i in range(300))
    doc = ParsedDocument(
        kind="txt",
        sections=[Section(text=text, title="Advanced features and routines of the phone")],
    )
    tokenizer = embedder.model.tokenizer  # type: ignore[attr-defined]

    def model_tokens(s: str) -> int:  # what the model itself counts, special tokens included
        return len(tokenizer(s, truncation=False)["input_ids"])

    uncapped = chunk_document(doc, size=300, overlap=30, token_offsets=embedder.token_offsets)
    assert max(model_tokens(c.index_text) for c in uncapped) > embedder.max_seq_length
    capped = chunk_document(
        doc,
        size=300,
        overlap=30,
        token_offsets=embedder.token_offsets,
        max_tokens=embedder.max_input_tokens,
    )
    assert len(capped) > len(uncapped)
    assert max(model_tokens(c.index_text) for c in capped) <= embedder.max_seq_length
    assert max(c.token_count for c in capped) > 200  # capped, not shrunk to nothing
    assert "".join(doc.text[c.start : c.end] for c in capped[:1]) == capped[0].text
    # A smaller configured size is kept; a larger one is cut to the cap.
    assert capped_chunk_size(200, 254) == 200 and capped_chunk_size(300, 254) == 254
    assert capped_chunk_size(300, None) == 300


def test_no_chunk_lies_inside_the_one_before_it() -> None:
    """Found by the property test: stepping back by the overlap onto text with no word
    boundary used to end the next window at the same cut, repeating a shorter copy."""
    from raftweb.ingest.chunking import chunk_document
    from raftweb.ingest.types import ParsedDocument, Section

    doc = ParsedDocument(sections=[Section(text="a:0{. 0:\x1b0:")], kind="text")
    chunks = chunk_document(doc, size=8, overlap=4)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.start < b.start and a.end < b.end
