"""Evaluation engine (no Django): per-question scoring of an answer, aggregation into the
metrics of the evaluation matrix (with ``None`` and a reason where a metric cannot be
computed, never 0), configuration strings, gold-name matching, multiple-choice scoring and the
answer-correctness judge. The Django side (:mod:`evaluation`) stores and schedules."""
