"""Fine-tune the generator (the student) on RAFT rows: the linear script behind
``kind == "generator"`` runs (:func:`run`, called by ``python -m raftweb.train.run``).

It follows the run-directory contract of :mod:`raftweb.train`, top to bottom:

1. read ``config.json`` (:class:`GeneratorTrainConfig`); a ``CANCEL`` file already there ends
   the run as cancelled; ``method: qlora`` without CUDA + bitsandbytes stops here, before
   anything is loaded;
2. read ``data/train.jsonl`` and ``data/eval.jsonl`` (RAFT rows; with no eval rows,
   ``eval_share`` of the train rows is held out), render them exactly as chat prompts the student
   (:mod:`raftweb.train.data`), choose the sequence length;
3. load the tokenizer and the model with ``from_pretrained`` (a missing model names the
   ``base_model`` setting and ``RAFTWEB_STUDENT_MODEL``);
4. train with TRL's ``SFTTrainer``: loss on the answers only, LoRA (peft, ``all-linear``), QLoRA
   (4-bit bitsandbytes base) or full; a :class:`ContractCallback` appends ``step`` and ``eval``
   events to ``metrics.jsonl`` and stops after the current step when ``CANCEL`` appears
   (writing a checkpoint first); a re-run resumes from the newest complete
   ``checkpoints/checkpoint-<step>/``;
5. write the model (adapter or full) with its tokenizer to ``artifact.tmp/``, rename it to
   ``artifact/``, and end with the ``done`` event: ``succeeded`` with the metrics
   ``train_loss_first``, ``train_loss_last``, ``eval_loss``, ``steps``, ``tokens_per_s`` (and
   more), ``cancelled``, or ``failed`` with the reason (out of memory included; the checkpoints
   stay, so a re-run continues).

Under ``accelerate launch`` every process runs this script; only the main one writes events,
the done event and the artifact's rename.

Importing this module is cheap: torch, transformers, peft and TRL are imported when a run
starts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftweb.errors import Invalid
from raftweb.llm.catalog import DEFAULT_CHAT_MODEL, STUDENT, env_name
from raftweb.train import data as train_data
from raftweb.train.config import MAX_SEQ_LENGTH_CAP, GeneratorTrainConfig
from raftweb.train.rundir import (  # noqa: F401 - part of this module's interface
    ARTIFACT_DIR,
    ARTIFACT_TMP_DIR,
    CANCEL_FILE,
    CHECKPOINTS_DIR,
    CHECKPOINTS_KEPT,
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
    number,
    out_of_memory_message,
    removed_on_failure,
)
from raftweb.typedconfig import ConfigError

log = logging.getLogger(__name__)

KIND = "generator"

STUDENT_MODEL_ENV = env_name(STUDENT, "MODEL")  # RAFTWEB_STUDENT_MODEL
QLORA_UNAVAILABLE = "QLoRA needs a CUDA GPU and the bitsandbytes package; use --method lora or full"


class GeneratorTrainError(Invalid):
    """Bad input for a generator run (config, data, base model); the message says what to fix."""


# ------------------------------------------------------------------------------ run directory


def read_config(run_dir: Path) -> GeneratorTrainConfig:
    path = run_dir / "config.json"
    if not path.is_file():
        raise GeneratorTrainError(f"{path} is missing")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GeneratorTrainError(f"config.json is not JSON ({exc.msg})") from None
    if not isinstance(values, dict):
        raise GeneratorTrainError("config.json must hold a JSON object")
    values.setdefault("kind", KIND)
    values.pop("preset", None)  # recorded by some writers; the values are already applied
    try:
        return GeneratorTrainConfig.from_dict(values)
    except ConfigError as exc:
        raise GeneratorTrainError(f"config.json: {exc.message}") from None


# ------------------------------------------------------------------------------ environment


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def bitsandbytes_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def check_method(config: GeneratorTrainConfig) -> None:
    """Refuse what this machine cannot do, before anything is loaded."""
    if config.method == "qlora" and not (cuda_available() and bitsandbytes_available()):
        raise GeneratorTrainError(QLORA_UNAVAILABLE)


def use_bf16(config: GeneratorTrainConfig) -> bool:
    if config.bf16 == "on":
        return True
    if config.bf16 == "off":
        return False
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def attn_implementation(*, bf16: bool) -> str:
    """FlashAttention 2 where it is installed (CUDA, half precision: padding-free batches run
    through its variable-length kernel), else PyTorch's SDPA, which handles packed rows through
    a block-diagonal mask built from the position ids."""
    import importlib.util

    if bf16 and cuda_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


# ------------------------------------------------------------------------------ model


def resolve_base_model(config: GeneratorTrainConfig) -> tuple[str, str]:
    """(model id or path, where the name came from) - the setting, or the student model."""
    if config.base_model.strip():
        return config.base_model.strip(), "base_model"
    from_env = (os.environ.get(STUDENT_MODEL_ENV) or "").strip()
    if from_env:
        return from_env, STUDENT_MODEL_ENV
    return DEFAULT_CHAT_MODEL, f"the default student model ({STUDENT_MODEL_ENV} is not set)"


def _model_advice() -> str:
    return (
        "Set base_model (--base-model; 'Base model' in the form) to a local model folder or a "
        f"hub id available offline, or set {STUDENT_MODEL_ENV} (the student model used when "
        "base_model is empty)."
    )


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def load_tokenizer(name: str, source: str) -> Any:
    """The base model's tokenizer; it must have a chat template (prompts are chat prompts)."""
    from transformers import AutoTokenizer

    local = Path(name).expanduser()
    if _looks_like_path(name) and not local.exists():
        raise GeneratorTrainError(
            f"base model {name!r} (from {source}): no such model folder. {_model_advice()}"
        )
    target = str(local) if local.exists() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(target)
    except Exception as exc:  # OSError (not found / offline), ValueError (not a model)
        raise GeneratorTrainError(
            f"cannot load base model {name!r} (from {source}): {type(exc).__name__}: "
            f"{str(exc)[:300]}. {_model_advice()}"
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise GeneratorTrainError(
            f"base model {name!r} has no chat template; RAFT training renders chat prompts. "
            "Use an instruct/chat model (e.g. Qwen/Qwen2.5-0.5B-Instruct)."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: GeneratorTrainConfig, name: str, source: str, *, bf16: bool) -> Any:
    """The base model through ``from_pretrained``: LoRA over bf16 weights when bf16 is on,
    full fine-tuning over fp32 master weights (bf16 autocast), QLoRA over a 4-bit NF4 base."""
    import torch
    from transformers import AutoModelForCausalLM

    local = Path(name).expanduser()
    target = str(local) if local.exists() else name
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation(bf16=bf16)}
    if config.method == "qlora":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if bf16 else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_quant_storage=compute,
        )
        kwargs["dtype"] = compute
        # The 4-bit weights are placed at load time: on this process's GPU.
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0") or 0)}
    elif config.method == "lora" and bf16:
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    except (torch.OutOfMemoryError, MemoryError):
        raise
    except Exception as exc:
        raise GeneratorTrainError(
            f"cannot load base model {name!r} (from {source}): {type(exc).__name__}: "
            f"{str(exc)[:300]}. {_model_advice()}"
        ) from None
    if config.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    return model


def peft_config(config: GeneratorTrainConfig) -> Any:
    if config.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.effective_lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules_value,
        bias="none",
        task_type="CAUSAL_LM",
    )


# ------------------------------------------------------------------------------ callback


@dataclass
class Progress:
    """What the callback saw; read back after training."""

    cancelled: bool = False
    last_eval_step: int | None = None
    tokens_seen: float = 0.0  # the trainer's running count at the last step event
    window_s: float = 0.0  # training seconds since the last step event (saves/evals excluded)
    mark: float = field(default_factory=time.perf_counter)


def make_callback(run_dir: Path, events: Events, progress: Progress) -> Any:
    """A TrainerCallback that writes the contract's ``step`` / ``eval`` events and obeys CANCEL."""
    from transformers import TrainerCallback

    cancel_file = run_dir / CANCEL_FILE

    class ContractCallback(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            progress.mark = time.perf_counter()
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            now = time.perf_counter()
            progress.window_s += now - progress.mark
            progress.mark = now
            if agree(cancel_file.exists())[0]:
                progress.cancelled = True
                control.should_training_stop = True
                control.should_save = True  # a re-run (resume) continues from here
                control.should_evaluate = False
            return control

        def on_log(
            self,
            args: Any,
            state: Any,
            control: Any,
            logs: Mapping[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            logs = dict(logs or {})
            if "loss" in logs:  # a training log (not an eval or the end-of-training summary)
                # SFTTrainer counts the real (unpadded) tokens of every process in num_tokens.
                seen = number(logs.get("num_tokens")) or 0.0
                tokens = max(0.0, seen - progress.tokens_seen)
                seconds = max(progress.window_s, 1e-9)
                progress.tokens_seen, progress.window_s = seen, 0.0
                if state.is_world_process_zero:
                    events.step(
                        state,
                        logs,
                        tokens_per_s=tokens / seconds,
                        tokens=int(tokens),
                        seconds=round(seconds, 4),
                        mean_token_accuracy=number(logs.get("mean_token_accuracy")),
                    )
            progress.mark = time.perf_counter()
            return control

        def on_evaluate(
            self,
            args: Any,
            state: Any,
            control: Any,
            metrics: Mapping[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            metrics = dict(metrics or {})
            if "eval_loss" in metrics and state.is_world_process_zero:
                events.write(
                    "eval",
                    step=state.global_step,
                    eval_loss=number(metrics.get("eval_loss")),
                    eval_mean_token_accuracy=number(metrics.get("eval_mean_token_accuracy")),
                    eval_runtime_s=number(metrics.get("eval_runtime")),
                )
            progress.last_eval_step = state.global_step
            progress.mark = time.perf_counter()
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            progress.mark = time.perf_counter()
            return control

    return ContractCallback()


# ------------------------------------------------------------------------------ trainer


def training_args(
    config: GeneratorTrainConfig,
    *,
    output_dir: Path,
    max_seq_length: int,
    bf16: bool,
    has_eval: bool,
    device: str,
) -> Any:
    """The SFTConfig of a run: every knob of :class:`GeneratorTrainConfig` in one place."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        # transformers 5 reads a float below 1 as a share of the steps (warmup_ratio is deprecated)
        warmup_steps=float(config.warmup_ratio),
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,  # train_loss_first is the loss before any update
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=CHECKPOINTS_KEPT,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.save_steps if has_eval else None,
        bf16=bf16,
        fp16=False,
        **checkpointing_args(SFTConfig, config.gradient_checkpointing),
        # Data: conversational prompt-completion rows, loss on the completion (the answer) only.
        max_length=max_seq_length,
        completion_only_loss=True,
        assistant_only_loss=False,
        packing=config.packing,
        packing_strategy="bfd",  # best fit, padding-free: rows never attend to each other
        **_sampling_args(SFTConfig, config),
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
        ddp_find_unused_parameters=False,
    )


def _arg_names(args_class: Any) -> set[str]:
    from dataclasses import fields

    return {f.name for f in fields(args_class)}


def checkpointing_args(args_class: Any, enabled: bool) -> dict[str, Any]:
    """Activation (gradient) checkpointing, under the name this transformers uses: 5.x renamed
    ``gradient_checkpointing`` to ``activation_checkpointing`` (the old name warns)."""
    names = _arg_names(args_class)
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {
        f"{prefix}_checkpointing": enabled,
        f"{prefix}_checkpointing_kwargs": {"use_reentrant": False} if enabled else None,
    }


def _sampling_args(args_class: Any, config: GeneratorTrainConfig) -> dict[str, Any]:
    """Length-grouped batches (less padding) unless packing; 5.x names it a sampling strategy."""
    group = config.group_by_length and not config.packing
    if "train_sampling_strategy" in _arg_names(args_class):
        return {"train_sampling_strategy": "group_by_length" if group else "random"}
    return {"group_by_length": group}


# Devices that run eager kernels: nothing is compiled per tile shape there.
EAGER_DEVICES = frozenset({"cpu", "mps"})


def score_answer_positions_only() -> None:
    """Make TRL's fused LM head score only the positions that carry a label, on every device.

    SFTTrainer projects the hidden states through the LM head in tiles, without building the
    full logits. On Triton devices it projects only the positions with a label (the answer);
    elsewhere it projects every position, to keep tile shapes fixed for graph compilers (XLA,
    Neuron). CPU and MPS compile nothing, and a RAFT prompt is mostly context documents, so
    there the head did several times the work for the same loss: measured with
    ``bench/train_generator.py`` on CPU, 0.74-0.82x a plain ``Trainer``'s tokens/s before,
    0.98-1.22x after; with a real 152k-row vocabulary (``--shape tiny-152k``) 3.07x at 0.29x
    the memory. TRL reads the decision through ``trl.trainer.utils._use_triton`` at
    call time; the kernels keep their own (unpatched) reference. Idempotent; a TRL without
    that hook is left alone (``test_the_fused_head_scores_only_the_answer_on_cpu`` notices).
    """
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:  # pragma: no cover - TRL is a dependency
        return
    decide = getattr(trl_utils, "_use_triton", None)
    if decide is None or getattr(decide, "raftweb_compact", False):
        return

    def compact(device: Any) -> bool:
        return device.type in EAGER_DEVICES or decide(device)

    compact.raftweb_compact = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact


def build_trainer(
    config: GeneratorTrainConfig,
    *,
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    eval_dataset: Any | None,
    run_dir: Path,
    events: Events,
    progress: Progress,
    max_seq_length: int,
    bf16: bool,
    device: str,
) -> Any:
    """The SFTTrainer of a run (also used by ``bench/train_generator.py``)."""
    from trl import SFTTrainer

    score_answer_positions_only()
    args = training_args(
        config,
        output_dir=run_dir / CHECKPOINTS_DIR,
        max_seq_length=max_seq_length,
        bf16=bf16,
        has_eval=eval_dataset is not None,
        device=device,
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config(config),
        callbacks=[make_callback(run_dir, events, progress)],
    )


# ------------------------------------------------------------------------------ results


def summarize(run_dir: Path) -> dict[str, Any]:
    """The done event's metrics from every attempt's events in metrics.jsonl (a step redone after
    a resume counts with its latest value): ``train_loss_first`` / ``train_loss_last`` (the first
    and last logged training loss), ``eval_loss`` (the last eval), ``tokens_per_s`` (all real
    tokens over all training seconds)."""
    steps: dict[int, dict[str, Any]] = {}
    last_eval: dict[str, Any] | None = None
    for event in iter_events(run_dir):
        if event.get("event") == "step" and isinstance(event.get("step"), int):
            steps[event["step"]] = event
        elif event.get("event") == "eval":
            last_eval = event
    ordered = [steps[k] for k in sorted(steps)]
    tokens = sum(float(e.get("tokens") or 0) for e in ordered)
    seconds = sum(float(e.get("seconds") or 0) for e in ordered)
    return {
        "train_loss_first": ordered[0].get("loss") if ordered else None,
        "train_loss_last": ordered[-1].get("loss") if ordered else None,
        "eval_loss": last_eval.get("eval_loss") if last_eval else None,
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "tokens": int(tokens),
        "train_seconds": round(seconds, 2),
    }


def save_artifact(trainer: Any, run_dir: Path, *, steps: int) -> Path:
    """The adapter (lora, qlora) or the full model, with the tokenizer, written to
    ``artifact.tmp/`` and renamed to ``artifact/`` once complete."""
    tmp, final = run_dir / ARTIFACT_TMP_DIR, run_dir / ARTIFACT_DIR
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    with removed_on_failure(tmp):
        trainer.save_model(str(tmp))  # every process takes part (FSDP gathers); main writes
        if main:
            (tmp / "raftweb_artifact.json").write_text(
                json.dumps(
                    {
                        "kind": KIND,
                        "adapter": (tmp / "adapter_config.json").is_file(),
                        "steps": steps,
                    }
                )
            )
    if main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    return final


# ------------------------------------------------------------------------------ run


def run(run_dir: Path) -> int:
    """Train the generator in ``run_dir`` (see :mod:`raftweb.train`); returns the exit code
    (:data:`EXIT_SUCCEEDED`, :data:`EXIT_FAILED` or :data:`EXIT_CANCELLED`). The last line of
    metrics.jsonl is then the ``done`` event saying the same with the error or the metrics."""
    run_dir = Path(run_dir)
    events = Events(run_dir / METRICS_FILE, enabled=is_main_process())
    try:
        return _run(run_dir, events)
    except Exception as exc:  # noqa: BLE001 - every failure ends in a done event
        traceback.print_exc(file=sys.stderr)
        message = failure_message(run_dir, exc)
        events.write("done", status="failed", error=message, metrics=summarize(run_dir))
        return EXIT_FAILED


def _run(run_dir: Path, events: Events) -> int:
    t_start = time.perf_counter()
    config = read_config(run_dir)
    if (run_dir / CANCEL_FILE).exists():
        events.write("done", status="cancelled", error="", metrics=summarize(run_dir))
        return EXIT_CANCELLED
    check_method(config)

    data_dir = run_dir / "data"
    train_rows = train_data.read_rows(data_dir / "train.jsonl")
    eval_rows = train_data.read_rows(data_dir / "eval.jsonl")
    if not train_rows:
        raise GeneratorTrainError("data/train.jsonl has no training rows")
    eval_source = "data/eval.jsonl"
    if not eval_rows and config.eval_share > 0:
        train_rows, eval_rows = train_data.hold_out(train_rows, config.eval_share)
        eval_source = f"{config.eval_share:g} of data/train.jsonl"

    name, source = resolve_base_model(config)
    tokenizer = load_tokenizer(name, source)
    model_max = _model_max_length(name)
    system = config.system_prompt.strip() or None
    prepared = train_data.prepare_examples(
        tokenizer,
        train_rows,
        eval_rows,
        max_seq_length=config.max_seq_length,
        cap=MAX_SEQ_LENGTH_CAP,
        model_max=model_max,
        system=system,
    )
    if not prepared.train:
        raise GeneratorTrainError(
            f"no training row fits max_seq_length {prepared.max_seq_length} (the longest has "
            f"{prepared.longest} tokens); raise max_seq_length"
        )
    bf16 = use_bf16(config)
    device = "cuda" if cuda_available() else "cpu"
    print(
        f"generator run: {len(prepared.train)} train / {len(prepared.eval)} eval rows "
        f"(eval from {eval_source}), {prepared.dropped_too_long} rows longer than "
        f"max_seq_length {prepared.max_seq_length} left out (longest {prepared.longest}), "
        f"{prepared.dropped_empty} empty rows left out; method {config.method}, base model "
        f"{name} (from {source}) on {device}, bf16 {bf16}, packing {config.packing}",
        flush=True,
    )

    if (
        config.packing
        and device == "cuda"
        and attn_implementation(bf16=bf16) != "flash_attention_2"
    ):
        print(
            "note: packing without FlashAttention 2 attends over whole packed batches (SDPA with "
            "a block mask); install flash-attn, or turn packing off (group_by_length stays on)",
            flush=True,
        )

    artifact = run_dir / ARTIFACT_DIR
    checkpoints = run_dir / CHECKPOINTS_DIR
    steps = 0
    if artifact.is_dir():
        # Trained and saved by an earlier attempt that stopped before its done event.
        print(f"{artifact} exists: training is complete, reporting it", flush=True)
        steps = _artifact_steps(artifact)
    else:
        checkpoints.mkdir(parents=True, exist_ok=True)
        model = load_model(config, name, source, bf16=bf16)
        progress = Progress()
        trainer = build_trainer(
            config,
            model=model,
            tokenizer=tokenizer,
            train_dataset=train_data.to_dataset(prepared.train),
            eval_dataset=train_data.to_dataset(prepared.eval) if prepared.eval else None,
            run_dir=run_dir,
            events=events,
            progress=progress,
            max_seq_length=prepared.max_seq_length,
            bf16=bf16,
            device=device,
        )
        resume = latest_checkpoint(checkpoints)
        if resume is not None:
            step = int(resume.name.rsplit("-", 1)[-1])
            print(f"resuming from {resume} (step {step})", flush=True)
            events.write("resume", step=step, checkpoint=resume.name)
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        steps = int(trainer.state.global_step)
        if progress.cancelled:
            print(f"cancelled at step {steps}; checkpoint written", flush=True)
            metrics = summarize(run_dir) | {"steps": steps}
            events.write("done", status="cancelled", error="", metrics=metrics)
            return EXIT_CANCELLED
        if trainer.eval_dataset is not None and progress.last_eval_step != steps:
            trainer.evaluate()
        save_artifact(trainer, run_dir, steps=steps)

    metrics = summarize(run_dir) | {
        "steps": steps,
        "train_rows": len(prepared.train),
        "eval_rows": len(prepared.eval),
        "rows_too_long": prepared.dropped_too_long,
        "max_seq_length": prepared.max_seq_length,
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    events.write(
        "done",
        status="succeeded",
        error="",
        metrics=metrics,
        base_model=name,
        method=config.method,
        artifact=ARTIFACT_DIR,
    )
    return EXIT_SUCCEEDED


def _model_max_length(name: str) -> int | None:
    """The model's ``max_position_embeddings`` (None when its config does not say)."""
    from transformers import AutoConfig

    local = Path(name).expanduser()
    try:
        config = AutoConfig.from_pretrained(str(local) if local.exists() else name)
    except Exception:  # noqa: BLE001 - the tokenizer loaded, so this is only a hint
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def _artifact_steps(artifact: Path) -> int:
    try:
        info = json.loads((artifact / "raftweb_artifact.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    return int(info.get("steps") or 0)


__all__ = [
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_SUCCEEDED",
    "QLORA_UNAVAILABLE",
    "STUDENT_MODEL_ENV",
    "Events",
    "GeneratorTrainError",
    "Progress",
    "build_trainer",
    "checkpointing_args",
    "iter_events",
    "latest_checkpoint",
    "load_model",
    "load_tokenizer",
    "make_callback",
    "resolve_base_model",
    "run",
    "summarize",
    "training_args",
]
