"""Cleaning text where it enters: lone UTF-16 surrogates.

JSON may spell a lone surrogate (``"\\ud800"``); Python decodes it into a ``str`` that cannot be
encoded as UTF-8, so it breaks whatever encodes it later (the search index, the database, the
HTTP client talking to a model server) far from where it came in. Such text cannot be valid
anyway, so every edge that decodes JSON (the API's parser, the chat WebSocket) replaces each
lone surrogate with U+FFFD, the replacement character, exactly as a browser's ``TextEncoder``
does; nothing is refused. (Form fields and query strings never hold one: Django decodes them
with replacement already.)
"""

from __future__ import annotations

import json
import re
from typing import Any, cast

from django.http import HttpRequest
from ninja.parser import Parser

# A valid pair never reaches Python as two code points (json.loads joins it), so any
# surrogate code point left in a str is a lone one.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def scrub_surrogates(value: Any) -> Any:
    """``value`` (a str, or JSON-like lists and dicts of them) with lone surrogates replaced."""
    if isinstance(value, str):
        return _SURROGATE_RE.sub(REPLACEMENT, value)
    if isinstance(value, list):
        return [scrub_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in value.items()}
    return value


def loads(text: str | bytes) -> Any:
    """``json.loads`` whose strings are clean."""
    return scrub_surrogates(json.loads(text))


class CleanJSONParser(Parser):
    """The API's JSON body parser: ninja's, with lone surrogates replaced."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        return cast(dict[str, Any], loads(request.body))
