"""The one registry shape: names, aliases, clear misses, lazy built-ins; parsers and chunkers."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import pytest

from raftweb.ingest import (
    Chunk,
    Chunker,
    ParsedDocument,
    Section,
    chunk_document,
    chunkers,
    register_chunker,
    registry,
)
from raftweb.registry import Registry, UnknownChoice


class Shape:
    def __init__(self, sides: int) -> None:
        self.sides = sides


def _shapes() -> Registry[Shape]:
    shapes: Registry[Shape] = Registry("shape")
    shapes.add("triangle", Shape(3), "tri")
    shapes.add("square", Shape(4))
    return shapes


def test_it_finds_objects_by_name_and_alias_and_lists_names_in_order() -> None:
    shapes = _shapes()
    assert shapes.get("triangle").sides == 3
    assert shapes.get("tri") is shapes.get("triangle")
    assert shapes["square"].sides == 4
    assert shapes.names() == ["triangle", "square"]  # aliases are not choices of their own
    assert list(shapes) == ["triangle", "square"]
    assert len(shapes) == 2
    assert "tri" in shapes and "square" in shapes and "circle" not in shapes
    assert [s.sides for s in shapes.values()] == [3, 4]
    assert [name for name, _ in shapes.items()] == ["triangle", "square"]
    assert shapes.canonical("tri") == "triangle"


def test_a_miss_names_the_kind_and_the_valid_choices() -> None:
    chunkers_: Registry[object] = Registry("chunker")
    chunkers_.add("sentences", object())
    chunkers_.add("fixed", object())
    with pytest.raises(UnknownChoice) as info:
        chunkers_.get("foo")
    assert str(info.value) == "unknown chunker 'foo'; choose one of: fixed, sentences"
    assert isinstance(info.value, LookupError) and isinstance(info.value, KeyError)
    assert (info.value.kind, info.value.name, info.value.choices) == (
        "chunker",
        "foo",
        ["fixed", "sentences"],
    )
    with pytest.raises(UnknownChoice, match=r"unknown chunker 'x' in RAFTWEB_CHUNKER; choose"):
        chunkers_.get("x", setting="RAFTWEB_CHUNKER")
    with pytest.raises(UnknownChoice, match="no shape is registered"):
        Registry[Shape]("shape").get("circle")


def test_the_error_survives_pickling() -> None:
    # Errors travel from worker and parse processes back to their parent.
    error = UnknownChoice("parser", "odt", ["pdf", "text"])
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is UnknownChoice and str(copy) == str(error)
    assert copy.choices == ["pdf", "text"]


def test_the_decorator_registers_and_returns_the_object_unchanged() -> None:
    exporters: Registry[type] = Registry("exporter")

    @exporters.register("jsonl", "ndjson")
    class JsonlExporter:
        pass

    assert isinstance(JsonlExporter, type)
    assert exporters.get("ndjson") is JsonlExporter
    with pytest.raises(TypeError, match="takes the exporter's name"):
        exporters.register(JsonlExporter)  # type: ignore[arg-type]


def test_names_are_not_taken_silently() -> None:
    shapes = _shapes()
    square = shapes.get("square")
    assert shapes.add("square", square) is square  # the same object again: a no-op
    with pytest.raises(ValueError, match="'square' is already taken"):
        shapes.add("square", Shape(5))
    with pytest.raises(ValueError, match="alias 'tri' already points to 'triangle'"):
        shapes.add("trapezoid", Shape(4), "tri")
    with pytest.raises(ValueError, match="alias 'square' is already a shape name"):
        shapes.add("box", Shape(4), "square")
    with pytest.raises(ValueError, match="'tri' is already an alias of 'triangle'"):
        shapes.add("tri", Shape(3))
    pentagon = shapes.add("square", Shape(5), replace=True)
    assert shapes.get("square") is pentagon
    with pytest.raises(ValueError, match="non-empty name"):
        shapes.add("", Shape(0))


def test_remove_takes_the_aliases_with_it() -> None:
    shapes = _shapes()
    removed = shapes.remove("tri")
    assert removed is not None and removed.sides == 3
    assert "triangle" not in shapes and "tri" not in shapes
    assert shapes.remove("triangle") is None
    shapes.add("tri", Shape(3))  # the alias is free again
    assert shapes.names() == ["square", "tri"]


def test_lazy_entries_are_listed_and_imported_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes = _shapes()
    holder = types.ModuleType("raftweb_test_shapes_holder")
    holder.shapes, holder.Shape = shapes, Shape  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, holder.__name__, holder)
    (tmp_path / "raftweb_test_hexagon.py").write_text(
        "import raftweb_test_shapes_holder as h\nh.shapes.add('hexagon', h.Shape(6))\n"
    )
    (tmp_path / "raftweb_test_broken.py").write_text("# registers nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    shapes.add_lazy("hexagon", "raftweb_test_hexagon")
    shapes.add_lazy("heptagon", "raftweb_test_broken")
    assert shapes.names() == ["triangle", "square", "hexagon", "heptagon"]
    assert "hexagon" in shapes
    assert "raftweb_test_hexagon" not in sys.modules
    assert len(shapes.values()) == 2  # listing does not import
    assert shapes.get("hexagon").sides == 6
    assert "raftweb_test_hexagon" in sys.modules
    assert shapes.names() == ["triangle", "square", "hexagon", "heptagon"]
    with pytest.raises(LookupError, match="did not register shape 'heptagon'"):
        shapes.get("heptagon")
    for name in ("raftweb_test_hexagon", "raftweb_test_broken"):
        sys.modules.pop(name, None)


# --------------------------------------------------------------------------- users
def test_parsers_are_chosen_by_format_name_or_file_extension() -> None:
    assert {"pdf", "docx", "json", "html", "markdown", "text"} <= set(registry.names())
    assert registry.get("md") is registry.get("markdown")
    assert registry.get("htm") is registry.get("html")
    assert registry.get("jsonl") is registry.get("json")
    assert registry.get("txt").name == "text"
    with pytest.raises(UnknownChoice, match=r"unknown parser 'odt'; choose one of: docx, html"):
        registry.get("odt")


def test_chunkers_are_chosen_through_the_registry() -> None:
    doc = ParsedDocument(kind="text", sections=[Section(text="One. Two. Three.")])
    with pytest.raises(UnknownChoice) as info:
        chunk_document(doc, chunker="nope")
    assert str(info.value) == "unknown chunker 'nope'; choose one of: record, token"

    @register_chunker
    class WholeChunker(Chunker):
        name = "whole-test"

        def chunk(self, doc: ParsedDocument, **kwargs: object) -> list[Chunk]:
            return [
                Chunk(
                    ordinal=0,
                    text=doc.text,
                    start=0,
                    end=len(doc.text),
                    page=None,
                    token_count=0,
                    hash="",
                )
            ]

    try:
        assert isinstance(chunkers.get("whole-test"), WholeChunker)
        chunks = chunk_document(doc, chunker="whole-test")
        assert [c.text for c in chunks] == ["One. Two. Three."]
    finally:
        chunkers.remove("whole-test")
    assert "whole-test" not in chunkers
