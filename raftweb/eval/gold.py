"""Matching gold document names (from a question set) to a knowledge base's documents.

Uploads store a sanitised file name (``manual#2.pdf`` becomes ``manual_2.pdf``) beside the
original one, and question sets written by people use the original: a gold name matches a
document when it equals either name, with or without the extension, ignoring case. Names that
match no document are returned, so callers list them instead of scoring them as misses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DocName:
    id: int
    name: str
    original: str = ""


@dataclass(frozen=True, slots=True)
class GoldMatch:
    doc_ids: frozenset[int]  # every document some gold name matched
    by_name: dict[str, frozenset[int]]
    unmatched: tuple[str, ...]


def name_keys(name: str) -> set[str]:
    """The forms a gold name may take for a file called ``name``."""
    name = (name or "").strip()
    if not name:
        return set()
    keys = {name.casefold()}
    if "." in name.strip("."):
        keys.add(name.rsplit(".", 1)[0].casefold())
    return keys


def gold_index(docs: Iterable[DocName]) -> dict[str, set[int]]:
    """key -> ids of the documents known under it (by stored or original name)."""
    index: dict[str, set[int]] = {}
    for doc in docs:
        for key in name_keys(doc.name) | name_keys(doc.original):
            index.setdefault(key, set()).add(doc.id)
    return index


def match_gold(gold: Sequence[str], index: dict[str, set[int]]) -> GoldMatch:
    by_name: dict[str, frozenset[int]] = {}
    unmatched: list[str] = []
    for name in gold:
        ids: set[int] = set()
        for key in name_keys(name):
            ids |= index.get(key, set())
        if ids:
            by_name[name] = frozenset(ids)
        elif name.strip():
            unmatched.append(name)
    all_ids = frozenset(i for ids in by_name.values() for i in ids)
    return GoldMatch(doc_ids=all_ids, by_name=by_name, unmatched=tuple(unmatched))
