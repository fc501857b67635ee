"""Training, Django-free: typed configs, data rendering, and linear scripts run as subprocesses.

The worker (``training/``) never trains in its own process. It prepares a *run directory* and
starts ``python -m raftweb.train.run --run-dir DIR`` (or ``accelerate launch -m
raftweb.train.run --run-dir DIR`` when ``RAFTWEB_TRAIN_LAUNCHER=accelerate``), then tails the
files the script writes. The same directory can be copied to a GPU host with no database,
trained there, and copied back. The contract, file by file:

``config.json``       written by the worker: ``{"kind": "generator"|"embedding", ...}`` — the
                      typed config of that kind (:mod:`raftweb.train.config`), preset applied.
``data/train.jsonl``  written by the worker. generator: one RAFT row per line (the keys of
                      :class:`raftweb.raft.formats.RaftRow`: question, context documents, oracle
                      index, cot_answer, ...); embedding: ``{"query", "positive", "negatives"}``.
``data/eval.jsonl``   the same shape, held out (generator: eval loss; embedding: recall/MRR).
``metrics.jsonl``     appended by the script, one JSON object per event:
                      ``{"event": "step", "step", "total_steps", "epoch", "loss",
                      "learning_rate", "grad_norm", "tokens_per_s", "ts"}``,
                      ``{"event": "eval", "step", "eval_loss", ...}``,
                      ``{"event": "done", "status": "succeeded"|"failed", "error", "metrics"}``.
``checkpoints/``      ``checkpoint-<step>/`` as written by the trainer; a re-run resumes from
                      the newest complete one.
``artifact/``         the result: a peft adapter, a full model, or a sentence-transformers
                      model; written to ``artifact.tmp/`` and renamed when complete.
``log.txt``           the script's stdout and stderr (the worker redirects them).
``CANCEL``            created by the worker to ask the script to stop after the current step.

Additions (generator script, :mod:`raftweb.train.generator`; the contract above is unchanged):

* ``done`` status may also be ``"cancelled"`` (CANCEL seen; a checkpoint of the step it stopped
  at is written first, so a re-run resumes - remove CANCEL before re-running). Exit codes of
  ``python -m raftweb.train.run``: 0 succeeded, 1 failed, 3 cancelled, 2 bad usage/unknown kind.
* generator ``done`` metrics: ``train_loss_first``, ``train_loss_last``, ``eval_loss`` (None
  without eval rows), ``steps``, ``tokens_per_s`` (real tokens, padding excluded, over training
  time, checkpoints and evals excluded), plus ``tokens``, ``train_seconds``, ``train_rows``,
  ``eval_rows``, ``rows_too_long``, ``max_seq_length``, ``seconds``; a succeeded done event also
  carries ``base_model``, ``method`` and ``artifact``. They are computed from every attempt's
  step events in metrics.jsonl, so a resumed run reports the whole run.
* ``step`` events also carry ``tokens``, ``seconds`` and ``mean_token_accuracy``; ``eval`` events
  ``eval_mean_token_accuracy`` and ``eval_runtime_s``. A resumed attempt first writes
  ``{"event": "resume", "step", "checkpoint"}``; the steps after the checkpoint are logged again
  (readers keep the latest event per step).
* ``artifact/raftweb_artifact.json``: ``{"kind", "adapter", "steps"}``.
"""
