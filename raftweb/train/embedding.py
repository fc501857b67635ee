"""Fine-tune the embedding model on reviewed (question, oracle chunk) pairs.

The linear script behind ``kind == "embedding"`` runs (:func:`run`, called by
``raftweb.train.run``). It follows the run-directory contract of :mod:`raftweb.train`:

* reads ``config.json`` (:class:`EmbeddingTrainConfig`), ``data/train.jsonl`` and
  ``data/eval.jsonl`` (``{"query", "positive", "negatives"}``), and the optional
  ``data/corpus.jsonl`` (``{"id", "text"}``: the knowledge base's chunks);
* trains with sentence-transformers' own trainer: MultipleNegativesRankingLoss, the other
  positives of a batch as negatives, plus the rows' retrieved distractors as hard negatives
  (the loss's ``(anchor, positive, negative_1..n)`` form), with a no-duplicates batch sampler
  (RAFT asks several questions per chunk; the same chunk twice in a batch would be a false
  negative);
* measures recall@k and MRR by dense retrieval before and after, over ``data/corpus.jsonl``
  when present (the honest setting: every chunk of the knowledge base competes) or else over
  the eval rows' positives and negatives;
* appends ``step`` / ``eval`` / ``done`` events to ``metrics.jsonl``; stops after the current
  step when ``CANCEL`` appears (a checkpoint is written so a re-run resumes); resumes from the
  newest complete ``checkpoints/checkpoint-<step>/``; writes the model to ``artifact.tmp/``
  and renames it to ``artifact/``.

Importing this module is cheap (no torch): the config class is used by forms and the API.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from raftweb.errors import Invalid
from raftweb.retrieval.embedder import DEFAULT_EMBEDDING_MODEL, resolve_model_path
from raftweb.train.rundir import (
    ARTIFACT_DIR,
    ARTIFACT_TMP_DIR,
    CANCEL_FILE,
    CHECKPOINTS_DIR,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    METRICS_FILE,
    Events,
    agree,
    failure_message,
    is_main_process,
    iter_events,
    latest_checkpoint,
    removed_on_failure,
    world,
)
from raftweb.typedconfig import TypedConfig, knob

log = logging.getLogger(__name__)

KIND = "embedding"

# Exit codes of :func:`run` (the ``done`` event in metrics.jsonl says the same in words).

# Each distractor adds one passage to encode per row; RAFT rows carry 3-4, more buys little.
MAX_HARD_NEGATIVES = 4
# The trainer's checkpoints are ~3x the model (weights + optimizer state): write one every few
# minutes (and when cancelled) rather than every step, so small runs are not dominated by I/O.
CHECKPOINT_EVERY_S = 300.0
CHECKPOINTS_KEPT = 2
# Queries are ranked against this many corpus items for MRR (as the product's retrieval eval).
MIN_RANK_DEPTH = 50

BEFORE_CACHE = "eval_before.json"  # in checkpoints/: the base model's scores, reused on resume


class EmbeddingTrainError(Invalid):
    """Bad input for an embedding run (config, data, base model); the message says what to fix."""


@dataclass(frozen=True)
class EmbeddingTrainConfig(TypedConfig):
    """Settings of an embedding fine-tuning run (``config.json`` when ``kind == "embedding"``)."""

    setting_noun: ClassVar[str] = "embedding training setting"

    kind: str = knob(
        KIND,
        label="Kind",
        choices=(KIND,),
        form=False,
        help="Which training script reads this config.",
    )
    base_model: str = knob(
        DEFAULT_EMBEDDING_MODEL,
        label="Base embedding model",
        help=(
            "The sentence-transformers model to tune: 'all-MiniLM-L6-v2' (bundled, offline), a "
            "local model directory, or a hub id (downloaded only where the hub is reachable)."
        ),
    )
    epochs: int = knob(2, label="Epochs", min=1, max=100, help="Passes over the training pairs.")
    learning_rate: float = knob(
        2e-5,
        label="Learning rate",
        min=1e-7,
        max=1e-2,
        help="Peak AdamW learning rate (after warm-up, decaying linearly to zero).",
    )
    batch_size: int = knob(
        32,
        label="Batch size",
        min=2,
        max=4096,
        help=(
            "Pairs per step. Every other passage in a batch is a negative for each question, "
            "so larger batches train a better ranker (memory permitting)."
        ),
    )
    warmup_ratio: float = knob(
        0.1,
        label="Warm-up share",
        min=0.0,
        max=0.5,
        advanced=True,
        help="Share of the steps over which the learning rate rises from zero.",
    )
    max_seq_length: int | None = knob(
        None,
        label="Max sequence length",
        min=8,
        max=8192,
        advanced=True,
        help=(
            "Word pieces per text; longer texts are cut. Empty: the model's own maximum "
            "(256 for all-MiniLM-L6-v2). Never more than the model's maximum."
        ),
    )
    use_hard_negatives: bool = knob(
        True,
        label="Use hard negatives",
        help=(
            "Also train against each row's distractors (retrieved near-misses), not only "
            "against the other passages in the batch."
        ),
    )
    seed: int = knob(
        42, label="Seed", min=0, max=2**31 - 1, advanced=True, help="Shuffling and initialisation."
    )
    eval_k: int = knob(
        5,
        label="Recall cut-off (k)",
        min=1,
        max=100,
        advanced=True,
        help="recall@k is measured before and after training on the held-out questions.",
    )


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Pair:
    """One training or eval row: a question, its oracle passage, and distractor passages."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()


@dataclass
class EvalSet:
    """Held-out questions and the passages they are ranked against."""

    queries: list[str]
    gold: list[set[int]]  # per query: indices into ``texts`` of its oracle passage
    texts: list[str]
    added_positives: int = 0  # eval positives missing from data/corpus.jsonl (appended)
    source: str = "eval rows"


def read_pairs(path: Path) -> list[Pair]:
    """Rows of ``{"query", "positive", "negatives"}``; a bad line raises naming file and line."""
    if not path.is_file():
        return []
    pairs: list[Pair] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EmbeddingTrainError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise EmbeddingTrainError(f"{where}: expected a JSON object")
            query, positive = rec.get("query"), rec.get("positive")
            if not isinstance(query, str) or not query.strip():
                raise EmbeddingTrainError(f"{where}: 'query' must be a non-empty string")
            if not isinstance(positive, str) or not positive.strip():
                raise EmbeddingTrainError(f"{where}: 'positive' must be a non-empty string")
            raw_negatives = rec.get("negatives") or []
            if not isinstance(raw_negatives, list) or not all(
                isinstance(n, str) for n in raw_negatives
            ):
                raise EmbeddingTrainError(f"{where}: 'negatives' must be a list of strings")
            negatives = tuple(
                dict.fromkeys(
                    n for n in raw_negatives if n.strip() and n.strip() != positive.strip()
                )
            )
            pairs.append(Pair(query, positive, negatives))
    return pairs


def _read_corpus(path: Path) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                items.append((str(rec["id"]), str(rec["text"])))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise EmbeddingTrainError(
                    f'{path.name} line {number}: expected {{"id", "text"}}'
                ) from None
    return items


def build_eval_set(rows: Sequence[Pair], corpus_path: Path | None) -> EvalSet:
    """Rank each question against the knowledge base's chunks (``corpus_path``) when given, else
    against the eval rows' own positives and negatives. A question's gold is every passage whose
    text is its positive's (whitespace-trimmed)."""
    texts: list[str] = []
    index: dict[str, list[int]] = {}

    def add(text: str) -> int:
        texts.append(text)
        index.setdefault(text.strip(), []).append(len(texts) - 1)
        return len(texts) - 1

    source = "eval rows"
    if corpus_path is not None and corpus_path.is_file():
        for _, text in _read_corpus(corpus_path):
            if text.strip():
                add(text)
        source = corpus_path.name
    else:
        for row in rows:
            for text in (row.positive, *row.negatives):
                if text.strip() not in index:
                    add(text)
    added = 0
    gold: list[set[int]] = []
    for row in rows:
        key = row.positive.strip()
        if key not in index:
            # The oracle chunk changed since the corpus was written (or it is not a chunk):
            # rank it anyway rather than count a question nobody could answer.
            add(row.positive)
            added += 1
        gold.append(set(index[key]))
    return EvalSet([r.query for r in rows], gold, texts, added, source)


def training_columns(
    pairs: Sequence[Pair], *, use_hard_negatives: bool, seed: int
) -> dict[str, list[str]]:
    """Columns for the loss: anchor, positive and, with hard negatives, ``negative_1..n``.

    ``n`` is the most distractors any row has (at most :data:`MAX_HARD_NEGATIVES`); the loss
    needs the same number in every row. A row with fewer repeats its own distractors (a repeat
    only weighs that negative a little more; another row's passage might be a false negative,
    and a text shared between rows makes the no-duplicates sampler split batches). A row with
    none borrows passages of other rows, never its own positive."""
    columns: dict[str, list[str]] = {
        "anchor": [p.query for p in pairs],
        "positive": [p.positive for p in pairs],
    }
    n = min(MAX_HARD_NEGATIVES, max((len(p.negatives) for p in pairs), default=0))
    if not use_hard_negatives or n == 0:
        return columns
    rng = random.Random(seed)
    pool = list(dict.fromkeys(t for p in pairs for t in (p.positive, *p.negatives)))
    negatives: list[list[str]] = []
    for p in pairs:
        own = list(p.negatives[:n])
        if not own:
            candidates = [t for t in pool if t.strip() != p.positive.strip()]
            if not candidates:  # every passage is this row's positive: nothing to borrow
                return columns
            own = rng.sample(candidates, min(n, len(candidates)))
        negatives.append([own[i % len(own)] for i in range(n)])
    for i in range(n):
        columns[f"negative_{i + 1}"] = [row[i] for row in negatives]
    return columns


# ------------------------------------------------------------------------------ evaluation


def retrieval_scores(
    model: Any, eval_set: EvalSet, *, k: int, batch_size: int = 64
) -> dict[str, float]:
    """recall@k, recall@1 and MRR (first gold passage within the top ``max(50, 10k)``) by
    brute-force cosine over ``eval_set.texts``."""
    import numpy as np
    import torch

    from raftweb.metrics import mean, mrr, recall_at_k

    if not eval_set.queries:
        return {}
    with torch.inference_mode():
        passages = model.encode(
            eval_set.texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        queries = model.encode(
            eval_set.queries,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    depth = min(len(eval_set.texts), max(MIN_RANK_DEPTH, 10 * k))
    cutoffs = sorted({1, k})  # recall@1 too: how often the gold passage comes first
    recalls: dict[int, list[float]] = {c: [] for c in cutoffs}
    rrs: list[float] = []
    for start in range(0, len(queries), 256):  # bounded memory on a large corpus
        scores = np.asarray(queries[start : start + 256]) @ np.asarray(passages).T
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        for row, candidates in enumerate(top):
            ranked = candidates[np.argsort(-scores[row, candidates], kind="stable")].tolist()
            gold = eval_set.gold[start + row]
            for c in cutoffs:
                recalls[c].append(recall_at_k(ranked, gold, c))
            rrs.append(mrr(ranked, gold))
    scores = {f"recall@{c}": round(mean(values), 4) for c, values in recalls.items()}
    return scores | {"mrr": round(mean(rrs), 4)}


# ------------------------------------------------------------------------------ run directory


def load_base_model(config: EmbeddingTrainConfig, *, device: str) -> Any:
    """The base model, or :class:`EmbeddingTrainError` naming the ``base_model`` setting."""
    name = config.base_model.strip()
    advice = (
        f"Set base_model (embedding training setting) to a local sentence-transformers model "
        f"directory or {DEFAULT_EMBEDDING_MODEL!r} (bundled, offline)."
    )
    if not name:
        raise EmbeddingTrainError(f"base_model is empty. {advice}")
    try:
        path = resolve_model_path(name)
    except Exception as exc:  # the bundled package is missing
        raise EmbeddingTrainError(f"cannot load base_model {name!r}: {exc}. {advice}") from None
    local = Path(path).expanduser()
    if local.exists():
        target = str(local)
    elif _looks_like_hub_id(name):
        target = name  # from the hub cache, or downloaded where the hub is reachable
    else:
        raise EmbeddingTrainError(f"base_model {name!r}: no such model directory. {advice}")
    try:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(target, device=device)
    except Exception as exc:
        raise EmbeddingTrainError(
            f"cannot load base_model {name!r} ({type(exc).__name__}: {str(exc)[:300]}). {advice}"
        ) from None


def _looks_like_hub_id(name: str) -> bool:
    """``org/model`` or ``model`` (what the hub accepts), not a filesystem path."""
    parts = name.split("/")
    return len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def _seq_length(config: EmbeddingTrainConfig, model: Any) -> int:
    own = int(getattr(model, "max_seq_length", 0) or 0) or 512
    if config.max_seq_length is None:
        return own
    if config.max_seq_length > own:
        log.warning(
            "max_seq_length %s exceeds the model's maximum %s; using %s",
            config.max_seq_length,
            own,
            own,
        )
    return min(config.max_seq_length, own)


@dataclass
class _Progress:
    """What the callback saw; read back by :func:`train`."""

    cancelled: bool = False
    tokens: int = 0
    last_log_tokens: int = 0
    last_log_time: float = field(default_factory=time.perf_counter)
    last_save_time: float = field(default_factory=time.perf_counter)


def _callback(run_dir: Path, events: Events, progress: _Progress) -> Any:
    from transformers import TrainerCallback

    cancel_file = run_dir / CANCEL_FILE

    class ContractCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            cancel = cancel_file.exists()
            save = time.perf_counter() - progress.last_save_time >= CHECKPOINT_EVERY_S
            cancel, save = agree(cancel, save)
            if cancel:
                progress.cancelled = True
                control.should_training_stop = True
                control.should_save = True  # so that a re-run resumes from here
            elif save:
                control.should_save = True
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            progress.last_save_time = time.perf_counter()
            return control

        def on_log(
            self,
            args: Any,
            state: Any,
            control: Any,
            logs: Mapping[str, Any] | None = None,
            **kw: Any,
        ) -> Any:
            logs = dict(logs or {})
            if "loss" not in logs or not state.is_world_process_zero:  # not a step, or not ours
                return control
            now = time.perf_counter()
            elapsed = max(now - progress.last_log_time, 1e-9)
            tokens = progress.tokens - progress.last_log_tokens
            progress.last_log_time, progress.last_log_tokens = now, progress.tokens
            events.step(state, logs, tokens_per_s=tokens / elapsed)
            return control

    return ContractCallback()


class _CountingCollator:
    """The trainer's collator, counting the real (unpadded) tokens of each batch; everything
    else (the trainer reads its attributes) is the wrapped collator's."""

    def __init__(
        self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]], progress: _Progress
    ):
        self._inner = inner
        self._progress = progress

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._inner(features)
        for key, value in batch.items():
            if key.endswith("attention_mask") and hasattr(value, "sum"):
                self._progress.tokens += int(value.sum())
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# Below this many optimizer steps a run leaves the model all but unchanged (measured on the
# E-Manual set: 25 pairs, 2 epochs of one step each at 2e-5 moved MRR by +0.0005).
FEW_STEPS = 8


def optimizer_steps(pairs: int, config: EmbeddingTrainConfig) -> int:
    """How many optimizer steps a run makes (every process takes its share of each batch)."""
    per_step = config.batch_size * world()[2]
    return math.ceil(pairs / per_step) * config.epochs


def few_steps_note(pairs: int, config: EmbeddingTrainConfig) -> str:
    """The log's advice when a run is too short to change the model, else ''."""
    steps = optimizer_steps(pairs, config)
    if steps >= FEW_STEPS:
        return ""
    return (
        f"note: {pairs} pairs at batch size {config.batch_size} for {config.epochs} epoch(s) "
        f"make {steps} optimizer step(s); with fewer than {FEW_STEPS} the model barely changes. "
        "Approve more pairs, or raise the epochs or the learning rate."
    )


def train(
    model: Any,
    pairs: Sequence[Pair],
    config: EmbeddingTrainConfig,
    *,
    run_dir: Path,
    events: Events,
    device: str,
) -> tuple[bool, int]:
    """Train ``model`` in place with the library's trainer: (finished, not cancelled; the last
    step)."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    try:
        from sentence_transformers.base.sampler import BatchSamplers
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )
    except ImportError:  # sentence-transformers < 6 (the old paths are deprecated in 6)
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.training_args import BatchSamplers

    columns = training_columns(
        pairs, use_hard_negatives=config.use_hard_negatives, seed=config.seed
    )
    note = few_steps_note(len(pairs), config)
    if note:
        print(note, flush=True)
    dataset = Dataset.from_dict(columns)
    checkpoints = run_dir / CHECKPOINTS_DIR
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        # transformers 5 reads a float below 1 as a share of the steps (warmup_ratio is deprecated)
        warmup_steps=float(config.warmup_ratio),
        lr_scheduler_type="linear",
        seed=config.seed,
        data_seed=config.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        logging_strategy="steps",
        logging_steps=1,
        # Checkpoints are written by the callback (every few minutes and when cancelled).
        save_strategy="no",
        save_total_limit=CHECKPOINTS_KEPT,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
    )
    card = getattr(model, "model_card_data", None)
    if card is not None:
        # The model card must not look the base model up on the hub (no network behind the
        # user's back) nor quote the knowledge base's passages as widget examples.
        for attr in ("local_files_only", "generate_widget_examples"):
            if hasattr(card, attr):
                setattr(card, attr, attr == "local_files_only")
    progress = _Progress()
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=_loss(MultipleNegativesRankingLoss, model),
        callbacks=[_callback(run_dir, events, progress)],
    )
    trainer.data_collator = _CountingCollator(trainer.data_collator, progress)
    resume = latest_checkpoint(checkpoints)
    if resume is not None:
        print(f"resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return not progress.cancelled, int(trainer.state.global_step)


def _loss(loss_class: Any, model: Any) -> Any:
    """MNRL; across several GPUs, every device's passages are negatives for every question."""
    if world()[2] > 1:
        import inspect

        if "gather_across_devices" in inspect.signature(loss_class).parameters:
            return loss_class(model, gather_across_devices=True)
    return loss_class(model)


def _save_artifact(model: Any, run_dir: Path, *, config: EmbeddingTrainConfig, pairs: int) -> Path:
    tmp, final = run_dir / ARTIFACT_TMP_DIR, run_dir / ARTIFACT_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    with removed_on_failure(tmp):
        # Not the library's model card: it quotes training rows (the knowledge base's passages).
        model.save(str(tmp), create_model_card=False)
        settings = json.dumps(config.to_dict(), indent=2)
        (tmp / "README.md").write_text(
            f"# Embedding model tuned by RAFTweb\n\nBase model: `{config.base_model}`; "
            f"{pairs} (question, passage) training pairs; MultipleNegativesRankingLoss.\n\n"
            f"Load with `SentenceTransformer(<this folder>)`.\n\n```json\n{settings}\n```\n",
            encoding="utf-8",
        )
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def _device() -> str:
    try:
        import torch

        return f"cuda:{world()[1]}" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


def _read_config(run_dir: Path) -> EmbeddingTrainConfig:
    path = run_dir / "config.json"
    if not path.is_file():
        raise EmbeddingTrainError(f"{path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EmbeddingTrainError(f"config.json is not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise EmbeddingTrainError("config.json must hold a JSON object")
    data.setdefault("kind", KIND)
    return EmbeddingTrainConfig.from_dict(data)


def _evaluate(
    model: Any, eval_set: EvalSet | None, k: int, events: Events, *, step: int, stage: str
) -> dict[str, float]:
    if eval_set is None or not eval_set.queries:
        return {}
    t0 = time.perf_counter()
    scores = retrieval_scores(model, eval_set, k=k)
    events.write(
        "eval",
        step=step,
        stage=stage,
        questions=len(eval_set.queries),
        corpus=len(eval_set.texts),
        seconds=round(time.perf_counter() - t0, 2),
        **scores,
    )
    return scores


def run(run_dir: Path) -> int:
    """Train an embedding model in ``run_dir`` (see :mod:`raftweb.train`); returns the exit code
    (:data:`EXIT_SUCCEEDED`, :data:`EXIT_FAILED` or :data:`EXIT_CANCELLED`). The last line of
    metrics.jsonl is the ``done`` event saying the same with the error or the metrics."""
    run_dir = Path(run_dir)
    # Under ``accelerate launch`` every process runs this; the main one alone writes events,
    # measures and saves, the others only train.
    events = Events(run_dir / METRICS_FILE, enabled=is_main_process())
    try:
        return _run(run_dir, events)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        events.write("done", status="failed", error=failure_message(run_dir, exc), metrics={})
        return EXIT_FAILED


def _run(run_dir: Path, events: Events) -> int:
    t_start = time.perf_counter()
    config = _read_config(run_dir)
    if (run_dir / CANCEL_FILE).exists():
        events.write("done", status="cancelled", error="", metrics={})
        return EXIT_CANCELLED
    data = run_dir / "data"
    pairs = read_pairs(data / "train.jsonl")
    if not pairs:
        raise EmbeddingTrainError("data/train.jsonl has no training pairs")
    eval_rows = read_pairs(data / "eval.jsonl")
    eval_set = build_eval_set(eval_rows, data / "corpus.jsonl") if eval_rows else None
    if eval_set is not None and eval_set.added_positives:
        print(
            f"{eval_set.added_positives} eval positives were not in corpus.jsonl; ranked anyway",
            flush=True,
        )

    device = _device()
    model = load_base_model(config, device=device)
    model.max_seq_length = _seq_length(config, model)
    k = config.eval_k
    checkpoints = run_dir / CHECKPOINTS_DIR
    checkpoints.mkdir(parents=True, exist_ok=True)
    print(
        f"embedding run: {len(pairs)} pairs, {len(eval_rows)} eval questions over "
        f"{len(eval_set.texts) if eval_set else 0} passages ({eval_set.source if eval_set else '-'}), "
        f"model {config.base_model} (max_seq_length {model.max_seq_length}) on {device}",
        flush=True,
    )

    # The base model's scores: computed once, kept for a resumed run (the base does not change).
    before_path = checkpoints / BEFORE_CACHE
    before: dict[str, float] = {}
    main = events.enabled
    if before_path.is_file():
        before = json.loads(before_path.read_text())
    elif eval_set is not None and main:
        before = _evaluate(model, eval_set, k, events, step=0, stage="before")
        before_path.write_text(json.dumps(before))

    artifact = run_dir / "artifact"
    t_train = time.perf_counter()
    step = 0
    if artifact.is_dir() and (artifact / "modules.json").is_file():
        # Trained and saved by an earlier attempt that stopped before its done event.
        if not main:
            return EXIT_SUCCEEDED
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(artifact), device=device)
    else:
        finished, step = train(model, pairs, config, run_dir=run_dir, events=events, device=device)
        if not finished:
            events.write("done", status="cancelled", error="", metrics={})
            return EXIT_CANCELLED
        if not main:
            return EXIT_SUCCEEDED
        _save_artifact(model, run_dir, config=config, pairs=len(pairs))
        # The artifact is complete: the trainer's checkpoints (weights + optimizer state, ~3x
        # the model each) have nothing left to resume. The base model's scores stay.
        for path in checkpoints.glob("checkpoint-*"):
            shutil.rmtree(path, ignore_errors=True)
    train_s = time.perf_counter() - t_train

    after = _evaluate(model, eval_set, k, events, step=step, stage="after")
    metrics: dict[str, Any] = {"train_pairs": len(pairs), "train_seconds": round(train_s, 2)}
    if before and after:
        metrics |= {
            f"recall@{k}_before": before[f"recall@{k}"],
            f"recall@{k}_after": after[f"recall@{k}"],
            "mrr_before": before["mrr"],
            "mrr_after": after["mrr"],
            "recall@1_before": before["recall@1"],
            "recall@1_after": after["recall@1"],
            "eval_questions": len(eval_set.queries) if eval_set else 0,
            "eval_corpus": len(eval_set.texts) if eval_set else 0,
        }
    metrics["seconds"] = round(time.perf_counter() - t_start, 2)
    events.write("done", status="succeeded", error="", metrics=metrics)
    return EXIT_SUCCEEDED


__all__ = [
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_SUCCEEDED",
    "iter_events",
    "EmbeddingTrainConfig",
    "EmbeddingTrainError",
    "Pair",
    "build_eval_set",
    "read_pairs",
    "retrieval_scores",
    "run",
    "training_columns",
]
