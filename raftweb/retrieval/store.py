"""Vector stores behind one interface; Chroma embedded (PersistentClient) or server (HttpClient).

One collection per knowledge base and embedding version, cosine space. Vectors are always
precomputed by our embedder: Chroma's own embedding function is never used (it would download).
"""

from __future__ import annotations

import abc
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from raftweb.registry import Registry, UnknownChoice

Metadata = dict[str, str | int | float | bool]


class VectorStoreError(RuntimeError):
    pass


class VectorStoreUnavailable(VectorStoreError):
    """The store cannot be reached (server down, disk unwritable); the operation can be retried."""


def collection_name(kb_key: str | int, embedding_version: str) -> str:
    """A Chroma-legal, stable collection name for (knowledge base, embedding version)."""
    version = re.sub(r"[^A-Za-z0-9._-]+", "-", embedding_version).strip("-._") or "base"
    name = f"kb-{kb_key}-{version}"
    return name[:200].rstrip("-._")


class VectorStore(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadatas: Sequence[Metadata],
    ) -> None: ...

    @abc.abstractmethod
    def delete_document(self, collection: str, document_id: int) -> None: ...

    @abc.abstractmethod
    def delete_ids(self, collection: str, ids: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def query(
        self, collection: str, vector: np.ndarray, k: int, document_ids: Sequence[int] | None = None
    ) -> list[tuple[str, float]]:
        """Nearest chunk ids with cosine similarity, best first."""

    def query_many(
        self,
        collection: str,
        vectors: np.ndarray,
        k: int,
        document_ids: Sequence[int] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """:meth:`query` for several vectors (one result list per row); stores that can answer
        them in one call override this."""
        return [self.query(collection, v, k, document_ids) for v in vectors]

    def get_vectors(self, collection: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``ids`` (absent ids are left out). Stores that cannot return
        vectors return none, and callers embed the text instead."""
        return {}

    @abc.abstractmethod
    def count(self, collection: str) -> int: ...

    @abc.abstractmethod
    def drop(self, collection: str) -> None: ...

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise VectorStoreUnavailable when the store cannot be used."""


StoreFactory = Callable[[str, Path | None], VectorStore]


class UnknownVectorStore(VectorStoreError, UnknownChoice):
    """A vector store URL whose scheme no store is registered for.

    A :class:`VectorStoreError` (what store callers catch) and the registry's
    :class:`~raftweb.registry.UnknownChoice`, with the message the store has always given.
    """

    def __init__(self, url: str, scheme: str, schemes: list[str]) -> None:
        UnknownChoice.__init__(self, "vector store scheme", scheme, schemes)
        self.url = url
        self.message = f"unsupported vector store URL {url!r}; known schemes: {schemes}"
        self.args = (self.message,)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.url, self.name, self.choices))


class StoreRegistry(Registry[StoreFactory]):
    """Store factories keyed by URL scheme: ``@stores.register("http", "https")``.

    A URL without a scheme (``""``, or a bare path) is served by the ``file`` factory. A factory
    is called as ``factory(url, path)``.
    """

    def __init__(self) -> None:
        super().__init__("vector store scheme")

    def schemes(self) -> list[str]:
        """Every accepted URL scheme (aliases included; ``""`` is a bare path), sorted."""
        known = set(self.names()) | set(self._aliases)
        if "file" in self:
            known.add("")
        return sorted(known)

    def open(self, url: str = "", path: Path | str | None = None) -> VectorStore:
        scheme = urlparse(url).scheme if url else ""
        try:
            factory = self.get(scheme or "file")
        except UnknownChoice:
            raise UnknownVectorStore(url, scheme, self.schemes()) from None
        return factory(url, Path(path) if path else None)


stores = StoreRegistry()


def _unavailable(exc: Exception) -> VectorStoreUnavailable:
    return VectorStoreUnavailable(f"vector store unavailable: {type(exc).__name__}: {exc}")


def _is_connection_error(exc: Exception) -> bool:
    import httpx

    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, (httpx.TransportError, ConnectionError, OSError)) or any(
        s in text for s in ("connect", "timed out", "timeout", "unavailable", "could not connect")
    )


class ChromaStore(VectorStore):
    name = "chroma"

    def __init__(self, client: Any, label: str) -> None:
        self.client = client
        self.label = label
        self._collections: dict[str, Any] = {}
        self._lock = threading.Lock()
        try:
            self.max_batch = int(client.get_max_batch_size())
        except Exception:
            self.max_batch = 1000

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except VectorStoreError:
            raise
        except Exception as exc:
            if _is_connection_error(exc):
                raise _unavailable(exc) from exc
            raise VectorStoreError(f"vector store error: {type(exc).__name__}: {exc}") from exc

    def _collection(self, name: str) -> Any:
        with self._lock:
            coll = self._collections.get(name)
            if coll is None:
                coll = self._call(
                    lambda: self.client.get_or_create_collection(
                        name=name,
                        configuration={"hnsw": {"space": "cosine"}},
                        embedding_function=None,
                    )
                )
                self._collections[name] = coll
            return coll

    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadatas: Sequence[Metadata],
    ) -> None:
        if not len(ids):
            return
        coll = self._collection(collection)
        step = max(1, min(self.max_batch, 2000))
        for i in range(0, len(ids), step):
            batch_ids = list(ids[i : i + step])
            batch_vecs = np.asarray(vectors[i : i + step], dtype=np.float32)
            batch_meta = [dict(m) for m in metadatas[i : i + step]]
            # Bound as defaults: the call runs now, but the binding makes that explicit.
            self._call(
                lambda ids_=batch_ids, vecs=batch_vecs, meta=batch_meta: coll.upsert(
                    ids=ids_, embeddings=vecs, metadatas=meta
                )
            )

    def delete_document(self, collection: str, document_id: int) -> None:
        coll = self._collection(collection)
        self._call(lambda: coll.delete(where={"document_id": int(document_id)}))

    def delete_ids(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            coll = self._collection(collection)
            self._call(lambda: coll.delete(ids=list(ids)))

    def query(
        self, collection: str, vector: np.ndarray, k: int, document_ids: Sequence[int] | None = None
    ) -> list[tuple[str, float]]:
        return self.query_many(collection, np.asarray(vector)[None, :], k, document_ids)[0]

    def query_many(
        self,
        collection: str,
        vectors: np.ndarray,
        k: int,
        document_ids: Sequence[int] | None = None,
    ) -> list[list[tuple[str, float]]]:
        # One Chroma call for every vector: one lock round, one HNSW pass (or one HTTP request
        # to a Chroma server) instead of one per query.
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if not len(vectors):
            return []
        coll = self._collection(collection)
        where: dict[str, Any] | None = None
        if document_ids is not None:
            ids = [int(d) for d in document_ids]
            if not ids:
                return [[] for _ in vectors]
            where = {"document_id": ids[0]} if len(ids) == 1 else {"document_id": {"$in": ids}}
        result = self._call(
            lambda: coll.query(
                query_embeddings=list(vectors),
                n_results=max(1, int(k)),
                where=where,
                include=["distances"],
            )
        )
        all_ids = result.get("ids") or []
        all_dists = result.get("distances") or []
        out: list[list[tuple[str, float]]] = []
        for row in range(len(vectors)):
            ids_out = all_ids[row] if row < len(all_ids) else []
            dists = all_dists[row] if row < len(all_dists) else []
            out.append([(cid, 1.0 - float(d)) for cid, d in zip(ids_out, dists, strict=False)])
        return out

    def get_vectors(self, collection: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        coll = self._collection(collection)
        result = self._call(lambda: coll.get(ids=list(ids), include=["embeddings"]))
        found = result.get("embeddings")
        if found is None:
            return {}
        return {
            cid: np.asarray(vec, dtype=np.float32)
            for cid, vec in zip(result.get("ids") or [], found, strict=False)
        }

    def count(self, collection: str) -> int:
        return int(self._call(lambda: self._collection(collection).count()))

    def drop(self, collection: str) -> None:
        with self._lock:
            self._collections.pop(collection, None)
        try:
            self.client.delete_collection(collection)
        except Exception as exc:
            if _is_connection_error(exc):
                raise _unavailable(exc) from exc
            # Missing collection: nothing to drop.

    def ping(self) -> None:
        self._call(lambda: self.client.heartbeat())


_open_stores: dict[tuple[str, str], ChromaStore] = {}
_open_lock = threading.Lock()


def _chroma_settings() -> Any:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False, allow_reset=False)


@stores.register("file")
def _open_chroma_embedded(url: str, path: Path | None) -> VectorStore:
    if url:
        path = Path(urlparse(url).path)
    if path is None:
        raise VectorStoreError("an embedded Chroma store needs a path (CHROMA_PATH)")
    key = ("path", str(Path(path).resolve()))
    with _open_lock:
        if key not in _open_stores:
            import chromadb

            Path(path).mkdir(parents=True, exist_ok=True)
            try:
                client = chromadb.PersistentClient(path=str(path), settings=_chroma_settings())
            except Exception as exc:
                raise _unavailable(exc) from exc
            _open_stores[key] = ChromaStore(client, str(path))
        return _open_stores[key]


@stores.register("http", "https")
def _open_chroma_http(url: str, path: Path | None) -> VectorStore:
    key = ("url", url)
    with _open_lock:
        if key not in _open_stores:
            import chromadb

            parsed = urlparse(url)
            try:
                client = chromadb.HttpClient(
                    host=parsed.hostname or "localhost",
                    port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                    ssl=parsed.scheme == "https",
                    settings=_chroma_settings(),
                )
            except Exception as exc:
                raise _unavailable(exc) from exc
            _open_stores[key] = ChromaStore(client, url)
        return _open_stores[key]


def open_vector_store(url: str = "", path: Path | str | None = None) -> VectorStore:
    """Chroma server when ``url`` is http(s), else an embedded Chroma at ``path``."""
    return stores.open(url, path)


def forget_open_stores() -> None:
    """Drop cached clients (tests that restart a server on the same URL)."""
    with _open_lock:
        _open_stores.clear()
