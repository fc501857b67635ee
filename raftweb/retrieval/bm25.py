"""A persisted BM25 index that is updated incrementally and never rebuilt per query.

Design (a tiny Lucene): the index lives in one SQLite file (WAL, safe across the web process and
workers). ``docs`` holds one row per chunk (its metadata and display text); postings are written
as immutable *segments* — one per ``add`` call — each a term-sorted CSR block of numpy arrays
stored as BLOBs. Removing a chunk deletes its ``docs`` row (a tombstone for its postings); a
small tiered merge folds the smallest segments together and purges dead postings. Readers keep
the decoded segments in process memory and, when the ``generation`` counter moves, load only the
segments they have not seen. A query is then a handful of numpy gathers per term.

bm25s is not used for the index itself because it cannot add or remove documents incrementally;
its English stop-word list is reused, and PyStemmer (Snowball) stems when installed.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_SEGMENTS = 10
MAX_IDLE_CONNECTIONS = 8  # pooled per index; a burst beyond opens (and then closes) more
MERGE_FACTOR = 5

_TOKEN = re.compile(r"\w+", re.UNICODE)


class BM25Error(RuntimeError):
    pass


def _stopwords() -> frozenset[str]:
    try:
        from bm25s.stopwords import STOPWORDS_EN

        return frozenset(STOPWORDS_EN)
    except ImportError:  # pragma: no cover - bm25s is a declared dependency
        return frozenset(
            {
                "a",
                "an",
                "and",
                "are",
                "as",
                "at",
                "be",
                "by",
                "for",
                "from",
                "in",
                "is",
                "it",
                "of",
                "on",
                "or",
                "that",
                "the",
                "to",
                "was",
                "with",
            }
        )


class Analyzer:
    """Lowercase word tokens, English stop words removed, Snowball-stemmed when PyStemmer exists."""

    def __init__(self) -> None:
        self.stopwords = _stopwords()
        try:
            import Stemmer

            self._stemmer = Stemmer.Stemmer("english")
            self.name = "en-snowball-v1"
        except ImportError:
            self._stemmer = None
            self.name = "en-plain-v1"
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def _stem_all(self, words: list[str]) -> list[str]:
        if self._stemmer is None:
            return words
        cache = self._cache
        missing = [w for w in set(words) if w not in cache]
        if missing:
            with self._lock:
                for w, s in zip(missing, self._stemmer.stemWords(missing), strict=False):
                    cache[w] = s
                if len(cache) > 500_000:  # bound memory on pathological corpora
                    cache.clear()
        return [cache.get(w) or w for w in words]

    def __call__(self, text: str) -> list[str]:
        stop = self.stopwords
        words = [
            w for w in _TOKEN.findall(text.lower()) if w not in stop and (len(w) > 1 or w.isdigit())
        ]
        return self._stem_all(words)


_analyzer: Analyzer | None = None


def default_analyzer() -> Analyzer:
    global _analyzer
    if _analyzer is None:
        _analyzer = Analyzer()
    return _analyzer


@dataclass(slots=True)
class IndexedChunk:
    """What the BM25 index stores per chunk; ``index_text`` is tokenized, ``text`` is displayed."""

    chunk_id: str
    document_id: int
    text: str
    document_name: str = ""
    page: int | None = None
    start: int = 0
    end: int = 0
    index_text: str | None = None


@dataclass(slots=True)
class _Segment:
    seg: int
    vocab: dict[str, int]
    indptr: np.ndarray
    doc_idx: np.ndarray
    tf: np.ndarray
    ndocs: int


@dataclass(slots=True)
class _Snapshot:
    generation: int
    segments: dict[int, _Segment]
    alive: np.ndarray  # bool by idx
    lengths: np.ndarray  # float32 by idx
    document_ids: np.ndarray  # int64 by idx
    n_docs: int
    avgdl: float
    norm: np.ndarray | None = None  # BM25 length normalisation, computed on first query
    norm_params: tuple[float, float] | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs(
    idx INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id TEXT NOT NULL UNIQUE,
    document_id INTEGER NOT NULL,
    document_name TEXT NOT NULL DEFAULT '',
    page INTEGER,
    start INTEGER NOT NULL DEFAULT 0,
    "end" INTEGER NOT NULL DEFAULT 0,
    length INTEGER NOT NULL,
    text TEXT NOT NULL,
    seg INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_document ON docs(document_id);
CREATE TABLE IF NOT EXISTS segments(
    seg INTEGER PRIMARY KEY AUTOINCREMENT,
    terms TEXT NOT NULL,
    indptr BLOB NOT NULL,
    doc_idx BLOB NOT NULL,
    tf BLOB NOT NULL,
    ndocs INTEGER NOT NULL
);
"""


def _build_segment_arrays(
    rows: list[tuple[int, Counter[str]]],
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Term-sorted CSR postings from (idx, term counts) rows."""
    postings: dict[str, list[tuple[int, int]]] = {}
    for idx, counts in rows:
        for term, tf in counts.items():
            postings.setdefault(term, []).append((idx, tf))
    terms = sorted(postings)
    indptr = np.zeros(len(terms) + 1, dtype=np.int64)
    total = sum(len(postings[t]) for t in terms)
    doc_idx = np.empty(total, dtype=np.int64)
    tf = np.empty(total, dtype=np.float32)
    pos = 0
    for i, term in enumerate(terms):
        plist = postings[term]
        n = len(plist)
        arr = np.asarray(plist, dtype=np.int64)
        doc_idx[pos : pos + n] = arr[:, 0]
        tf[pos : pos + n] = arr[:, 1]
        pos += n
        indptr[i + 1] = pos
    return terms, indptr, doc_idx, tf


class BM25Index:
    """One persisted BM25 index (one SQLite file), e.g. per knowledge base."""

    _snapshots: dict[str, _Snapshot] = {}
    _snap_lock = threading.Lock()

    def __init__(
        self,
        path: str | Path,
        *,
        k1: float = 1.2,
        b: float = 0.75,
        analyzer: Analyzer | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The snapshot cache's key, resolved once: resolving per search cost ~4% of an API
        # search's time in the web process (a realpath walk of system calls).
        self._key = str(self.path.resolve())
        self.k1 = k1
        self.b = b
        self.analyzer = analyzer or default_analyzer()
        self._idle: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        with self._connect() as conn:
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='analyzer'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('analyzer', ?)", (self.analyzer.name,)
                )
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            elif (
                row[0] != self.analyzer.name
                and conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
            ):
                raise BM25Error(
                    f"BM25 index {self.path} was built with analyzer {row[0]!r} but this process uses "
                    f"{self.analyzer.name!r}; re-index the knowledge base"
                )
            else:
                conn.execute("UPDATE meta SET value=? WHERE key='analyzer'", (self.analyzer.name,))

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection, kept open: opening and closing per call cost more than the work
        (closing the last WAL connection checkpoints the log). Pooled, not one per thread: the
        ASGI server runs each request in a thread of its own, and per-thread connections were
        never closed - one leaked file handle per search."""
        with self._conns_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield conn
        finally:
            if conn.in_transaction:  # a reader that failed half-way: never pool an open one
                conn.rollback()
            with self._conns_lock:
                keep = len(self._idle) < MAX_IDLE_CONNECTIONS
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._idle:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._idle.clear()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'"
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ writes
    def add(self, chunks: Sequence[IndexedChunk]) -> None:
        """Add (or replace, by chunk_id) chunks as one new segment."""
        if not chunks:
            return
        analyzed = [
            Counter(self.analyzer(c.index_text if c.index_text is not None else c.text))
            for c in chunks
        ]
        with self._write() as conn:
            self._delete_chunk_ids(conn, [c.chunk_id for c in chunks])
            seg = conn.execute(
                "INSERT INTO segments(terms, indptr, doc_idx, tf, ndocs) VALUES ('', x'', x'', x'', 0)"
            ).lastrowid
            rows: list[tuple[int, Counter[str]]] = []
            for c, counts in zip(chunks, analyzed, strict=False):
                idx = conn.execute(
                    'INSERT INTO docs(chunk_id, document_id, document_name, page, start, "end", length, text, seg) '
                    "VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        c.chunk_id,
                        int(c.document_id),
                        c.document_name,
                        c.page,
                        c.start,
                        c.end,
                        sum(counts.values()),
                        c.text,
                        seg,
                    ),
                ).lastrowid
                rows.append((int(idx), counts))
            self._store_segment(conn, seg, rows)
            self._maybe_merge(conn)

    def _store_segment(
        self, conn: sqlite3.Connection, seg: int, rows: list[tuple[int, Counter[str]]]
    ) -> None:
        terms, indptr, doc_idx, tf = _build_segment_arrays(rows)
        conn.execute(
            "UPDATE segments SET terms=?, indptr=?, doc_idx=?, tf=?, ndocs=? WHERE seg=?",
            ("\n".join(terms), indptr.tobytes(), doc_idx.tobytes(), tf.tobytes(), len(rows), seg),
        )

    def _delete_chunk_ids(self, conn: sqlite3.Connection, chunk_ids: Sequence[str]) -> int:
        removed = 0
        for i in range(0, len(chunk_ids), 500):
            part = list(chunk_ids[i : i + 500])
            marks = ",".join("?" * len(part))
            removed += conn.execute(f"DELETE FROM docs WHERE chunk_id IN ({marks})", part).rowcount
        return removed

    def remove_ids(self, chunk_ids: Sequence[str]) -> int:
        with self._write() as conn:
            return self._delete_chunk_ids(conn, list(chunk_ids))

    def remove_document(self, document_id: int) -> int:
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM docs WHERE document_id=?", (int(document_id),)
            ).rowcount

    def clear(self) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM docs")
            conn.execute("DELETE FROM segments")

    def _maybe_merge(self, conn: sqlite3.Connection, force: bool = False) -> None:
        segs = conn.execute("SELECT seg, ndocs FROM segments ORDER BY ndocs, seg").fetchall()
        if not force and len(segs) <= MAX_SEGMENTS:
            return
        victims = [s for s, _ in (segs if force else segs[:MERGE_FACTOR])]
        if len(victims) < 2 and not force:
            return
        self._merge(conn, victims)

    def _merge(self, conn: sqlite3.Connection, victims: list[int]) -> None:
        """Fold segments together, dropping postings of removed chunks."""
        marks = ",".join("?" * len(victims))
        alive = {
            row[0] for row in conn.execute(f"SELECT idx FROM docs WHERE seg IN ({marks})", victims)
        }
        merged: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for row in conn.execute(
            f"SELECT terms, indptr, doc_idx, tf FROM segments WHERE seg IN ({marks})", victims
        ):
            seg = self._decode(0, row)
            alive_mask = np.isin(seg.doc_idx, np.fromiter(alive, dtype=np.int64, count=len(alive)))
            for term, i in seg.vocab.items():
                a, b = seg.indptr[i], seg.indptr[i + 1]
                keep = alive_mask[a:b]
                if keep.any():
                    merged.setdefault(term, []).append((seg.doc_idx[a:b][keep], seg.tf[a:b][keep]))
        conn.execute(f"DELETE FROM segments WHERE seg IN ({marks})", victims)
        new = conn.execute(
            "INSERT INTO segments(terms, indptr, doc_idx, tf, ndocs) VALUES ('', x'', x'', x'', 0)"
        ).lastrowid
        terms = sorted(merged)
        indptr = np.zeros(len(terms) + 1, dtype=np.int64)
        idx_parts, tf_parts = [], []
        for i, term in enumerate(terms):
            parts = merged[term]
            n = sum(len(p[0]) for p in parts)
            indptr[i + 1] = indptr[i] + n
            idx_parts.extend(p[0] for p in parts)
            tf_parts.extend(p[1] for p in parts)
        doc_idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, dtype=np.int64)
        tf = np.concatenate(tf_parts) if tf_parts else np.zeros(0, dtype=np.float32)
        conn.execute(
            "UPDATE segments SET terms=?, indptr=?, doc_idx=?, tf=?, ndocs=? WHERE seg=?",
            (
                "\n".join(terms),
                indptr.tobytes(),
                doc_idx.astype(np.int64).tobytes(),
                tf.astype(np.float32).tobytes(),
                len(alive),
                new,
            ),
        )
        conn.execute(f"UPDATE docs SET seg=? WHERE seg IN ({marks})", [new, *victims])

    def optimize(self) -> None:
        """Merge everything into one segment (after bulk loads)."""
        with self._write() as conn:
            self._maybe_merge(conn, force=True)

    # ------------------------------------------------------------------ reads
    @staticmethod
    def _decode(seg: int, row: tuple[str, bytes, bytes, bytes]) -> _Segment:
        terms_text, indptr, doc_idx, tf = row[0], row[1], row[2], row[3]
        terms = terms_text.split("\n") if terms_text else []
        return _Segment(
            seg=seg,
            vocab={t: i for i, t in enumerate(terms)},
            indptr=np.frombuffer(indptr, dtype=np.int64),
            doc_idx=np.frombuffer(doc_idx, dtype=np.int64),
            tf=np.frombuffer(tf, dtype=np.float32),
            ndocs=0,
        )

    def _snapshot(self) -> _Snapshot:
        key = self._key
        with self._connect() as conn:
            generation = int(
                conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]
            )
            with self._snap_lock:
                snap = self._snapshots.get(key)
                if snap is not None and snap.generation == generation:
                    return snap
            # Load inside one read transaction so docs and segments agree.
            conn.execute("BEGIN")
            generation = int(
                conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]
            )
            seg_ids = [r[0] for r in conn.execute("SELECT seg FROM segments")]
            old = snap.segments if snap is not None else {}
            segments = {s: old[s] for s in seg_ids if s in old}
            for s in seg_ids:
                if s not in segments:
                    row = conn.execute(
                        "SELECT terms, indptr, doc_idx, tf FROM segments WHERE seg=?", (s,)
                    ).fetchone()
                    segments[s] = self._decode(s, row)
            rows = np.asarray(
                conn.execute("SELECT idx, length, document_id FROM docs").fetchall(), dtype=np.int64
            )
            conn.execute("COMMIT")
        size = int(rows[:, 0].max()) + 1 if len(rows) else 1
        alive = np.zeros(size, dtype=bool)
        lengths = np.zeros(size, dtype=np.float32)
        document_ids = np.full(size, -1, dtype=np.int64)
        if len(rows):
            alive[rows[:, 0]] = True
            lengths[rows[:, 0]] = rows[:, 1]
            document_ids[rows[:, 0]] = rows[:, 2]
        n = int(len(rows))
        snap = _Snapshot(
            generation=generation,
            segments=segments,
            alive=alive,
            lengths=lengths,
            document_ids=document_ids,
            n_docs=n,
            avgdl=float(lengths.sum() / n) if n else 0.0,
        )
        with self._snap_lock:
            self._snapshots[key] = snap
        return snap

    def search(
        self, query: str, k: int = 10, document_ids: Sequence[int] | None = None
    ) -> list[tuple[str, float]]:
        """Top-k (chunk_id, score), best first."""
        return self.search_many([query], k, document_ids)[0]

    def search_many(
        self, queries: Sequence[str], k: int = 10, document_ids: Sequence[int] | None = None
    ) -> list[list[tuple[str, float]]]:
        """:meth:`search` for several queries against one snapshot of the index, with one read
        of their chunk ids (concurrent searches are looked up together, see
        raftweb.retrieval.retriever.run_lookups)."""
        snap = self._snapshot()
        ranked = [self._search_idx(q, k, document_ids, snap) for q in queries]
        wanted = {i for r in ranked for i, _ in r}
        ids = self._chunk_ids(wanted) if wanted else {}
        return [[(ids[i], s) for i, s in r if i in ids] for r in ranked]

    def _search_idx(
        self,
        query: str,
        k: int,
        document_ids: Sequence[int] | None,
        snap: _Snapshot,
    ) -> list[tuple[int, float]]:
        terms = set(self.analyzer(query))
        if not terms or snap.n_docs == 0 or k <= 0:
            return []
        scores = np.zeros(len(snap.alive), dtype=np.float32)
        touched = np.zeros(len(snap.alive), dtype=bool)
        any_hit = False
        norm = (
            snap.norm if snap.norm is not None and snap.norm_params == (self.k1, self.b) else None
        )
        if norm is None:  # once per snapshot, not per query
            norm = (self.k1 * (1 - self.b + self.b * snap.lengths / max(snap.avgdl, 1e-9))).astype(
                np.float32
            )
            snap.norm, snap.norm_params = norm, (self.k1, self.b)
        for term in terms:
            idx_parts, tf_parts = [], []
            for seg in snap.segments.values():
                i = seg.vocab.get(term)
                if i is None:
                    continue
                a, b = seg.indptr[i], seg.indptr[i + 1]
                idx_parts.append(seg.doc_idx[a:b])
                tf_parts.append(seg.tf[a:b])
            if not idx_parts:
                continue
            idx = np.concatenate(idx_parts)
            tf = np.concatenate(tf_parts)
            in_range = idx < len(snap.alive)
            idx, tf = idx[in_range], tf[in_range]
            keep = snap.alive[idx]
            idx, tf = idx[keep], tf[keep]
            df = len(idx)
            if df == 0:
                continue
            idf = math.log(1.0 + (snap.n_docs - df + 0.5) / (df + 0.5))
            scores[idx] += idf * tf * (self.k1 + 1) / (tf + norm[idx])
            touched[idx] = True
            any_hit = True
        if not any_hit:
            return []
        cand = np.flatnonzero(touched)  # sorted unique ids without sorting postings
        if document_ids is not None:
            cand = cand[
                np.isin(snap.document_ids[cand], np.asarray(list(document_ids), dtype=np.int64))
            ]
        if not len(cand):
            return []
        cand_scores = scores[cand]
        if len(cand) > k:
            top = np.argpartition(-cand_scores, k - 1)[:k]
        else:
            top = np.arange(len(cand))
        order = top[np.argsort(-cand_scores[top], kind="stable")]
        return [(int(cand[i]), float(cand_scores[i])) for i in order]

    def _chunk_ids(self, idxs: Iterable[int]) -> dict[int, str]:
        idxs = list(idxs)
        marks = ",".join("?" * len(idxs))
        with self._connect() as conn:
            return dict(
                conn.execute(
                    f"SELECT idx, chunk_id FROM docs WHERE idx IN ({marks})", idxs
                ).fetchall()
            )

    def get(self, chunk_ids: Sequence[str]) -> dict[str, IndexedChunk]:
        """Stored chunks by id (for building search hits); unknown ids are absent."""
        out: dict[str, IndexedChunk] = {}
        ids = list(chunk_ids)
        with self._connect() as conn:
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                marks = ",".join("?" * len(part))
                for row in conn.execute(
                    f'SELECT chunk_id, document_id, text, document_name, page, start, "end" FROM docs '
                    f"WHERE chunk_id IN ({marks})",
                    part,
                ):
                    out[row[0]] = IndexedChunk(
                        chunk_id=row[0],
                        document_id=row[1],
                        text=row[2],
                        document_name=row[3],
                        page=row[4],
                        start=row[5],
                        end=row[6],
                    )
        return out

    def count(self, document_id: int | None = None) -> int:
        with self._connect() as conn:
            if document_id is None:
                return int(conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM docs WHERE document_id=?", (document_id,)
                ).fetchone()[0]
            )

    def segment_count(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0])

    def generation(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def delete_files(self) -> None:
        """Remove the index from disk (knowledge base deleted)."""
        with self._snap_lock:
            self._snapshots.pop(str(self.path.resolve()), None)
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)
