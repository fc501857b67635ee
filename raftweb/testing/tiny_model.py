"""A tiny causal LM built locally, in seconds, for tests and benchmarks, and RAFT rows for it.

Nothing is downloaded: a byte-level BPE tokenizer is trained on the spot on a small built-in
text, wrapped as a ``PreTrainedTokenizerFast`` with ChatML-like special tokens and a chat
template, and paired with a Qwen2 model with random weights (fixed seed). Both are written
with ``save_pretrained`` so that every consumer goes through the real ``from_pretrained`` path
(the ``hf`` backend, ``transformers serve``, peft, training).

Shapes (:data:`SHAPES`): ``tiny`` (2 layers, 64 wide: for tests, trains in seconds on a CPU),
``tiny-152k`` (the same with a real 151,936-row vocabulary: benchmarks the LM head on a CPU)
and ``0.5b`` (the Qwen2.5-0.5B layout, ~0.5B parameters with its full 151,936-row vocabulary:
for GPU benchmarks; the tokenizer stays the tiny one, so only its first rows are ever used,
but every matrix multiply costs what the real model's does).

:func:`synthetic_raft_rows` makes RAFT rows (the keys of :class:`raftweb.raft.formats.RaftRow`,
as the worker writes them to ``data/train.jsonl``) that a tiny model can visibly learn.

The pytest fixtures over this module live in ``tests/fixtures/tiny_model.py``; benchmarks
import this module directly (they import nothing from ``tests/``).
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

TINY_MODEL_SEED = 1234
TINY_VOCAB_SIZE = 800

# ChatML-like template: the same shape as Qwen's, so prompts look like the real thing.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Model layouts by name. ``vocab_size`` None means "the tokenizer's size".
_TINY: dict[str, Any] = {
    "vocab_size": None,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    # The tiny layout with Qwen2.5's 151,936-row vocabulary: a CPU-sized model whose LM head
    # (and so the loss) costs what a real vocabulary's does (bench/train_generator.py).
    "tiny-152k": {**_TINY, "vocab_size": 151936},
    # Qwen2.5-0.5B's layout (494M parameters with tied embeddings).
    "0.5b": {
        "vocab_size": 151936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
    },
}

_CORPUS = [
    "Retrieval augmented fine-tuning teaches a model to answer from documents.",
    "The context documents are wrapped as <DOCUMENT> and </DOCUMENT> before the question.",
    "Text copied from the context sits between ##begin_quote## and ##end_quote##.",
    "The answer ends with <ANSWER>: followed by the final answer.",
    "Support staff ask questions; reviewers approve pairs; admins launch training runs.",
    "A judge model scores each answer and gives a reason for the score.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "Invoices are due within thirty days; refunds are processed in five business days.",
    "To reset a password, open the settings page and choose the security tab.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 appear in many documents.",
    'Punctuation: commas, periods. Questions? Answers! Quotes "like this" and (brackets).',
    "system user assistant hello world please thank you yes no maybe because therefore",
]


def _training_text() -> list[str]:
    # Repeat with small variations so the BPE merges cover common English subwords.
    lines: list[str] = []
    for i in range(20):
        for sentence in _CORPUS:
            lines.append(sentence if i % 2 == 0 else sentence.lower())
    return lines


def build_tiny_tokenizer():  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        # Every byte is in the vocabulary, so any text (and any random output) round-trips.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(path: str | Path, *, shape: str = "tiny") -> Path:
    """Build the model (of ``shape``, see :data:`SHAPES`) + tokenizer into ``path`` (created
    if needed) and return it.

    Idempotent: a folder that already holds a model of that shape is returned as is.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; choose one of: {', '.join(SHAPES)}")
    path = Path(path)
    marker = path / "tiny_model.json"
    if marker.exists() and (path / "config.json").exists():
        if json.loads(marker.read_text()).get("shape", "tiny") == shape:
            return path
    path.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tiny_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    layout = dict(SHAPES[shape])
    layout["vocab_size"] = layout["vocab_size"] or len(tokenizer)
    config = Qwen2Config(
        **layout,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(TINY_MODEL_SEED)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        # Random weights would sometimes pick an end token after one step; zeroing their
        # output rows keeps answers a predictable number of tokens long (max_tokens).
        model.lm_head.weight[eos_id].zero_()
        model.lm_head.weight[pad_id].zero_()
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=config.bos_token_id, do_sample=False
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    marker.write_text(
        json.dumps({"seed": TINY_MODEL_SEED, "vocab_size": len(tokenizer), "shape": shape})
    )
    return path


# ------------------------------------------------------------------------- RAFT rows

_ITEMS = ["invoice", "refund", "password", "fox", "judge", "answer", "question", "document"]
_WORDS = ["settings", "security", "thirty", "five", "brown", "lazy", "reason", "score"]


def synthetic_raft_rows(
    n: int, *, seed: int = 0, docs: int | tuple[int, int] = 3
) -> list[dict[str, Any]]:
    """``n`` RAFT rows (``dataclasses.asdict`` of :class:`RaftRow`, as in ``data/train.jsonl``):
    an oracle document stating a fact among ``docs - 1`` distractors (``docs`` a ``(low, high)``
    pair: a random count per row, so rows differ in length), and a chain-of-thought answer that
    quotes it and ends with ``<ANSWER>:``. The answers follow one pattern, so a tiny model's loss
    on them falls within a few steps."""
    from raftweb.raft.formats import RaftRow

    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        item, word = rng.choice(_ITEMS), rng.choice(_WORDS)
        number = rng.randint(0, 99)
        oracle = f"The {item} code is {number} and the word is {word}."
        distractors = [
            f"The {rng.choice(_ITEMS)} note says {rng.choice(_WORDS)} {rng.randint(0, 99)}."
            for _ in range(max(0, (rng.randint(*docs) if isinstance(docs, tuple) else docs) - 1))
        ]
        oracle_index = rng.randint(0, len(distractors))
        context = [*distractors]
        context.insert(oracle_index, oracle)
        question = f"What is the {item} code?"
        cot = (
            f"The context says ##begin_quote##{oracle}##end_quote## "
            f"so the {item} code is {number}.\n<ANSWER>: {number}"
        )
        row = RaftRow(
            id=f"synthetic-{seed}-{i}",
            question=question,
            cot_answer=cot,
            final_answer=str(number),
            context_ids=[f"chunk-{seed}-{i}-{j}" for j in range(len(context))],
            context_texts=context,
            context_titles=["" for _ in context],
            oracle_index=oracle_index,
            oracle_text=oracle,
            oracle_id=f"chunk-{seed}-{i}-{oracle_index}",
        )
        rows.append(dataclasses.asdict(row))
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path
