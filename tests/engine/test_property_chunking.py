"""Property-based tests of the chunker (hypothesis): for any document, size and overlap,
chunks are exact slices of the document text, in order, within the size, and together cover
every token (nothing the parser extracted is left out of the indexes)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftweb.ingest.chunking import chunk_document, content_hash, whitespace_token_offsets
from raftweb.ingest.types import ParsedDocument, Section

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Words, punctuation, sentence ends, newlines, paragraph breaks and long unbroken runs.
PIECES = st.one_of(
    st.text(alphabet="abcdefghij", min_size=1, max_size=12),
    st.sampled_from([" ", "  ", ". ", "! ", "; ", "\n", "\n\n", "\n \n", ", ", "—", "\t"]),
    st.text(alphabet="xyz", min_size=30, max_size=200),  # an "enormous" word
    st.text(max_size=5),  # anything at all
)
TEXTS = st.lists(PIECES, max_size=200).map("".join)


@st.composite
def documents(draw: st.DrawFn) -> ParsedDocument:
    sections = [
        Section(
            text=draw(TEXTS),
            page=draw(st.none() | st.integers(1, 50)),
            title=draw(st.sampled_from(["", "Intro", "A long title " * 5])),
        )
        for _ in range(draw(st.integers(1, 5)))
    ]
    return ParsedDocument(sections=sections, kind="text", title=draw(st.sampled_from(["", "Doc"])))


@SETTINGS
@given(
    doc=documents(),
    size=st.integers(8, 120),
    overlap=st.integers(0, 80),
    max_tokens=st.none() | st.integers(8, 200),
)
def test_chunks_are_ordered_exact_slices_that_cover_every_token(
    doc: ParsedDocument, size: int, overlap: int, max_tokens: int | None
) -> None:
    chunks = chunk_document(doc, size=size, overlap=overlap, max_tokens=max_tokens)
    text = doc.text
    # exact slices, ordinals in order, hashes of their own text
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert c.hash == content_hash(c.text)
        assert c.text.strip(), "no empty chunk"
        assert 0 < c.token_count <= size
        assert c.token_count == len(whitespace_token_offsets(c.text))
    # document order: each chunk starts after the previous one started, ends after it ended
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.start < b.start and a.end < b.end
    # coverage: every token of every section lies inside some chunk
    spans = [(c.start, c.end) for c in chunks]
    for section, base in zip(doc.sections, doc.section_offsets(), strict=True):
        for s, e in whitespace_token_offsets(section.text):
            assert any(a <= base + s and base + e <= b for a, b in spans), (
                f"token {section.text[s:e]!r} at {base + s} is in no chunk"
            )
    # pages travel with their section's chunks
    pages = {section.page for section in doc.sections}
    assert all(c.page in pages for c in chunks)


@SETTINGS
@given(doc=documents(), size=st.integers(8, 120), overlap=st.integers(0, 80))
def test_consecutive_chunks_share_at_most_the_overlap(
    doc: ParsedDocument, size: int, overlap: int
) -> None:
    chunks = chunk_document(doc, size=size, overlap=overlap)
    for a, b in zip(chunks, chunks[1:], strict=False):
        if b.start < a.end:  # same section, overlapping
            shared = whitespace_token_offsets(doc.text[b.start : a.end])
            assert len(shared) <= max(0, min(overlap, size // 2))


@SETTINGS
@given(texts=st.lists(TEXTS.filter(str.strip), min_size=1, max_size=6))
def test_records_become_one_whole_chunk_each(texts: list[str]) -> None:
    doc = ParsedDocument(sections=[Section(text=t) for t in texts], kind="json", mode="records")
    chunks = chunk_document(doc, size=8, overlap=0)
    assert [c.text for c in chunks] == texts
    assert all(doc.text[c.start : c.end] == c.text for c in chunks)
