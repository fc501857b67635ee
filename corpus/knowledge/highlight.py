"""Highlight query words in untrusted text: escape FIRST, then add <mark> to the escaped text."""

from __future__ import annotations

import re

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from raftweb.retrieval.bm25 import default_analyzer

_ENTITY = re.compile(r"(&[#\w]+;)")
_WORD = re.compile(r"\w+", re.UNICODE)


def query_terms(query: str) -> list[str]:
    stop = default_analyzer().stopwords
    words = {w.lower() for w in _WORD.findall(query) if len(w) > 1 and w.lower() not in stop}
    return sorted(words, key=len, reverse=True)


def highlight(text: str, query: str) -> SafeString:
    escaped = str(escape(text))
    terms = query_terms(query)
    if not terms:
        return mark_safe(escaped)
    # A word starting with a query word (or its stem-ish prefix) is marked: "charging" for "charge".
    stems = sorted(
        {t if len(t) <= 4 else t[: max(4, len(t) - 2)] for t in terms}, key=len, reverse=True
    )
    pattern = re.compile(
        r"\b(" + "|".join(re.escape(escape(s)) for s in stems) + r")\w*", re.IGNORECASE | re.UNICODE
    )
    parts = _ENTITY.split(escaped)  # never touch the inside of an entity such as &amp;
    out = [
        p if _ENTITY.fullmatch(p) else pattern.sub(lambda m: f"<mark>{m.group(0)}</mark>", p)
        for p in parts
    ]
    return mark_safe("".join(out))
