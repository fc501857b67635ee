"""Query encoding in a child process (opt-in: RAFTWEB_EMBED_PROCESS=1).

Why: a forward pass of the query encoder re-takes the GIL hundreds of times (once per module
call), and every time it waits behind the web process's busy request threads. Measured on the
2-core machine (all-MiniLM-L6-v2, a batch of 16 queries, one torch thread): 237 ms alone in
the process, 2.2 s beside 4 busy Python threads, 22.8 s beside 50; in a child process 233 ms,
573 ms and 494 ms. So 200 concurrent API searches were no faster than one after another.

The child is a plain ``python -m raftweb.retrieval.query_process MODEL_PATH`` (not a
multiprocessing spawn, which would re-import the server's ``__main__``). Protocol on its
stdin/stdout: length-prefixed pickles - a list of texts in, an ``(ok, vectors-or-message)``
pair out. One caller at a time (the query batcher's worker thread).
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

_HEADER = struct.Struct("!Q")


def _send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _recv(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the query encoder process closed its output")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the query encoder process closed its output")
    return pickle.loads(data)  # noqa: S301 - our own child process, over a private pipe


class QueryProcess:
    """A child process that encodes query batches with the model at ``path``."""

    def __init__(self, path: str, device: str | None = None) -> None:
        self.path = path
        self.device = device or "cpu"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raftweb.retrieval.query_process", self.path, self.device],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        assert proc.stdout is not None
        ok, message = _recv(proc.stdout)  # the model is loaded
        if not ok:
            proc.kill()
            raise RuntimeError(f"the query encoder process failed to start: {message}")
        return proc

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            for attempt in (1, 2):  # a child that died is restarted once
                if self._proc is None or self._proc.poll() is not None:
                    self._proc = self._start()
                assert self._proc.stdin is not None and self._proc.stdout is not None
                try:
                    _send(self._proc.stdin, list(texts))
                    ok, value = _recv(self._proc.stdout)
                except (EOFError, BrokenPipeError, OSError):
                    self._proc.kill()
                    self._proc = None
                    if attempt == 2:
                        raise
                    continue
                if not ok:
                    raise RuntimeError(f"query encoding failed: {value}")
                return np.asarray(value, dtype=np.float32)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None


def main() -> None:
    """The child: load the model once, then encode each batch it is sent, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # library chatter must not corrupt the protocol stream
    try:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)
        model = SentenceTransformer(sys.argv[1], device=sys.argv[2] if len(sys.argv) > 2 else "cpu")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        _send(stdout, (False, f"{type(exc).__name__}: {exc}"))
        return
    _send(stdout, (True, "ready"))
    while True:
        try:
            texts = _recv(stdin)
        except EOFError:
            return
        try:
            vectors = model.encode(
                texts,
                batch_size=max(1, len(texts)),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            _send(stdout, (True, np.asarray(vectors, dtype=np.float32)))
        except Exception as exc:  # noqa: BLE001 - one bad batch is reported, the child lives on
            _send(stdout, (False, f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    main()
