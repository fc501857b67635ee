"""Finding the oracle chunk of an imported pair: by where its quotes are found first (another
tool's chunk boundaries differ from ours, so its oracle text may straddle two of our chunks
while the quotes sit in one), then by its oracle text, else by the chunk that best matches
the question and answer (idf-weighted token overlap)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

from raftweb.raft.quotes import verify_quotes

K = TypeVar("K", bound=Hashable)
_TOKEN_RE = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    "a an the of to in on for and or is are was were be been what which who how when where why "
    "do does did can could should would will with by from at as it its this that these those i "
    "you your my we they he she not no yes".split()
)


def tokens(text: str) -> list[str]:
    return [t for t in _TOKEN_RE.findall(text.casefold()) if t not in _STOP]


def best_chunk(
    *,
    question: str,
    answer: str,
    quotes: Sequence[str],
    candidates: Mapping[K, str],
    oracle_text: str = "",
) -> K | None:
    if not candidates:
        return None
    str_keys = {str(k): k for k in candidates}
    texts = {str(k): v for k, v in candidates.items()}
    if quotes:
        hits = Counter(c.doc_key for c in verify_quotes(quotes, texts) if c.verified and c.doc_key)
        if hits:
            return str_keys[hits.most_common(1)[0][0]]
    if oracle_text.strip():
        checks = verify_quotes([oracle_text], texts, threshold=0.85)
        if checks and checks[0].verified and checks[0].doc_key is not None:
            return str_keys[checks[0].doc_key]
    query = tokens(f"{question} {answer}")
    if not query:
        return None
    docs = {k: Counter(tokens(v)) for k, v in texts.items()}
    n = len(docs)
    df = Counter(t for c in docs.values() for t in set(c))
    best_key, best_score = None, 0.0
    for key, counts in docs.items():
        score = sum(
            math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in set(query) if counts[t]
        )
        if score > best_score:
            best_key, best_score = key, score
    return str_keys[best_key] if best_key is not None else None
