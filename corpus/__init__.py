"""The corpus app: one Django app (label ``corpus``, one set of tables) in three rooms.

- ``knowledge/``  knowledge bases, documents, chunks, embedding versions, document splits;
  ``services.py`` (request side: validate, write, enqueue), ``ingestion.py`` (worker side:
  parse, chunk, embed, index; never enqueues), ``indexes.py``, ``search.py``, ``access.py``.
- ``generation/`` RAFT generation jobs, units, model calls, prompt overrides; ``runner.py`` is
  the worker side (claims a job with one conditional update, never enqueues).
- ``dataset/``    Q&A pairs, review, agreement, import/export (``io.py``), rows for training.
- ``tasks.py``    the only Huey module: Huey's autodiscovery imports ``<app>.tasks`` alone.

Dependencies point one way: knowledge <- generation, dataset; the RAFT format itself is the
engine's (``raftweb/raft``), never re-implemented here.
"""
