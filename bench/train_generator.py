"""Benchmark: generator fine-tuning throughput — the training loop of ``raftweb.train.generator``
(TRL's SFTTrainer as the script builds it) vs. a plain transformers ``Trainer`` + peft loop.

Cases (one process, the same synthetic RAFT rows rendered with the same chat prompt, the same
model shape and random weights, LoRA rank/alpha/dropout on all linear layers, batch size,
learning rate, precision, gradient checkpointing, seed and number of optimizer steps):

* ``plain`` — the hand-written baseline: tokenize prompt + answer, labels -100 on the prompt,
  ``DataCollatorForSeq2Seq`` padding to the longest row, ``get_peft_model``, ``Trainer``;
* ``raftweb`` — :func:`raftweb.train.generator.build_trainer` (the script's trainer and its
  contract callback), rows padded per batch;
* ``raftweb_packing`` — the same with ``packing: true`` (best-fit packing, padding-free).

Throughput counts the real tokens (not padding) of every batch, over the steps after the first
(warm-up), with the device synchronised at every step end. Each case prints one JSON line with
tokens/s and peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak
RSS while the case ran); then one line per raftweb case with the ratio raftweb / plain
(target >= 1.0, higher with packing). ``--rounds N`` alternates the cases N times and reports
each case's best round (for busy machines).

    .venv/bin/python bench/train_generator.py                       # CPU, tiny shape (< 2 min)
    .venv/bin/python bench/train_generator.py --shape tiny-152k     # CPU, a real vocabulary's head
    .venv/bin/python bench/train_generator.py --device cuda --shape 0.5b --steps 30

Self-contained: no Django, nothing from ``tests/``; the model is built in memory
(``raftweb.testing.tiny_model``), nothing is downloaded.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from raftweb.testing.tiny_model import SHAPES, build_tiny_tokenizer, synthetic_raft_rows  # noqa: E402
from raftweb.train import data as train_data  # noqa: E402
from raftweb.train import generator  # noqa: E402
from raftweb.train.config import GeneratorTrainConfig  # noqa: E402

SEED = 1234


# --------------------------------------------------------------------------- measuring


class PeakRSS:
    """The process's peak resident memory while a case runs (sampled; CPU runs)."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class TokenCounter:
    """Wraps a collator: the real (unpadded) tokens of each batch, in order."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.counts: list[int] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._inner(features)
        if "attention_mask" in batch:
            self.counts.append(int(batch["attention_mask"].sum()))
        else:  # padding-free: one flattened row, no padding
            self.counts.append(int(batch["input_ids"].numel()))
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def step_timer(device: str) -> Any:
    """A callback recording the time of every step end (device synchronised) and the loss."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.losses: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if device == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> Any:
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))
            return control

    return StepTimer()


# --------------------------------------------------------------------------- the model


def make_model(shape: str, tokenizer: Any, *, device: str, dtype: Any) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    layout = dict(SHAPES[shape])
    layout["vocab_size"] = layout["vocab_size"] or len(tokenizer)
    config = Qwen2Config(
        **layout,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
    )
    config._attn_implementation = generator.attn_implementation(bf16=dtype == torch.bfloat16)
    torch.manual_seed(SEED)
    with torch.device(device):  # initialised where it trains (0.5B on the CPU first is slow)
        model = Qwen2ForCausalLM(config)
    return model.to(dtype=dtype)


# --------------------------------------------------------------------------- cases


def config_for(args: argparse.Namespace, *, packing: bool) -> GeneratorTrainConfig:
    return GeneratorTrainConfig.from_dict(
        {
            "method": "lora",
            "lora_rank": args.lora_rank,
            "learning_rate": 1e-4,
            "epochs": 1,
            "batch_size": args.batch_size,
            "gradient_accumulation": 1,
            "max_steps": args.steps,
            "gradient_checkpointing": args.gradient_checkpointing,
            "bf16": "on" if args.device == "cuda" else "off",
            "packing": packing,
            "warmup_ratio": 0.0,
            "save_steps": 1_000_000,  # the loop, not checkpoint I/O
            "logging_steps": 1,
            "seed": SEED,
        }
    )


def plain_trainer(
    args: argparse.Namespace, model: Any, tokenizer: Any, examples: list[dict], max_len: int
) -> Any:
    """The hand-written loop: what a user writes with transformers + peft alone."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    def tokenize(example: dict) -> dict:
        prompt_len = train_data.prompt_length(tokenizer, example)
        messages = example["prompt"] + example["completion"]
        ids = train_data.token_ids(tokenizer.apply_chat_template(messages, tokenize=True))
        ids = ids[:max_len]
        labels = [-100] * min(prompt_len, len(ids)) + ids[prompt_len:]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    dataset = Dataset.from_list([tokenize(e) for e in examples])
    config = config_for(args, packing=False)
    model = get_peft_model(
        model,
        LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.effective_lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-plain-"),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        max_steps=config.max_steps,
        logging_steps=1,
        save_strategy="no",
        bf16=config.bf16 == "on",
        **generator.checkpointing_args(TrainingArguments, config.gradient_checkpointing),
        seed=SEED,
        data_seed=SEED,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=args.device == "cpu",
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    return Trainer(model=model, args=targs, train_dataset=dataset, data_collator=collator)


def raftweb_trainer(
    args: argparse.Namespace,
    model: Any,
    tokenizer: Any,
    examples: list[dict],
    max_len: int,
    *,
    packing: bool,
) -> Any:
    run_dir = Path(tempfile.mkdtemp(prefix="bench-raftweb-"))
    config = config_for(args, packing=packing)
    return generator.build_trainer(
        config,
        model=model,
        tokenizer=tokenizer,
        train_dataset=train_data.to_dataset(examples),
        eval_dataset=None,
        run_dir=run_dir,
        events=generator.Events(run_dir / "metrics.jsonl"),
        progress=generator.Progress(),
        max_seq_length=max_len,
        bf16=config.bf16 == "on",
        device=args.device,
    )


def run_case(name: str, args: argparse.Namespace, tokenizer: Any, prepared: Any) -> dict:
    import torch

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = make_model(args.shape, tokenizer, device=args.device, dtype=dtype)
    if name == "plain":
        trainer = plain_trainer(args, model, tokenizer, prepared.train, prepared.max_seq_length)
    else:
        trainer = raftweb_trainer(
            args,
            model,
            tokenizer,
            prepared.train,
            prepared.max_seq_length,
            packing=name == "raftweb_packing",
        )
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    timer = step_timer(args.device)
    trainer.add_callback(timer)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        trainer.train()
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = rss.peak
    steps = len(timer.ends)
    # Steps 2..N: the first carries one-off costs (allocation, kernels, lazy init).
    tokens = sum(counter.counts[1:steps])
    seconds = timer.ends[-1] - timer.ends[0] if steps > 1 else float("nan")
    result = {
        "bench": "train_generator",
        "case": name,
        "device": args.device,
        "shape": args.shape,
        "steps": steps,
        "batch_size": args.batch_size,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "peak_memory_mb": round(peak / 2**20, 1),
        "memory": "cuda_max_allocated" if args.device == "cuda" else "rss",
        "loss_first": round(timer.losses[0], 4) if timer.losses else None,
        "loss_last": round(timer.losses[-1], 4) if timer.losses else None,
    }
    del trainer, model, counter
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--shape", choices=tuple(SHAPES), default="tiny")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per case")
    parser.add_argument("--rows", type=int, default=0, help="rows (default: enough for --steps)")
    parser.add_argument("--batch-size", type=int, default=0, help="default 4 (cpu) / 8 (cuda)")
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: on for cuda (as the GPU recipes), off for cpu",
    )
    parser.add_argument(
        "--cases", default="plain,raftweb,raftweb_packing", help="comma-separated subset"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the cases this often; report each one's best"
    )
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
    args.batch_size = args.batch_size or (8 if args.device == "cuda" else 4)
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = args.device == "cuda"
    rows = args.rows or args.batch_size * (args.steps + 2)

    tokenizer = build_tiny_tokenizer()
    # Rows of 1-6 context documents: lengths vary as in real RAFT data (padding has a cost).
    raft_rows = [train_data.row_from_dict(r) for r in synthetic_raft_rows(rows, docs=(1, 6))]
    prepared = train_data.prepare_examples(
        tokenizer, raft_rows, [], max_seq_length=0, cap=4096, model_max=None
    )
    results: dict[str, dict] = {}
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    for round_ in range(args.rounds):
        for name in names:  # alternated, so a busy machine slows every case alike
            result = run_case(name, args, tokenizer, prepared) | {"round": round_ + 1}
            best = results.get(name)
            if best is None or (result["tokens_per_s"] or 0) > (best["tokens_per_s"] or 0):
                results[name] = result
    for name in names:
        print(json.dumps(results[name] | {"rounds": args.rounds}), flush=True)
    base = results.get("plain")
    for name, result in results.items():
        if name == "plain" or base is None:
            continue
        ours, theirs = result["tokens_per_s"], base["tokens_per_s"]
        print(
            json.dumps(
                {
                    "bench": "train_generator",
                    "case": "ratio",
                    "ours": name,
                    "baseline": "plain",
                    "device": args.device,
                    "shape": args.shape,
                    "ratio": round(ours / theirs, 3) if ours and theirs else None,
                    "memory_ratio": round(result["peak_memory_mb"] / base["peak_memory_mb"], 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
