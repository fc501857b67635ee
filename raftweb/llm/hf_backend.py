"""Backend "hf": a transformers causal LM loaded in this process (optionally + a peft adapter).

- ``spec.model`` is a hub id or a local folder (with ``config.json``). Local folders, and
  everything when ``HF_HUB_OFFLINE=1``, load with ``local_files_only`` so nothing is fetched.
- The model is loaded lazily on first use, in a worker thread, once per backend instance
  (and :func:`raftweb.llm.get_backend` caches instances per spec, so once per process).
- One generation at a time per loaded model: a CPU or a single GPU does not get faster with
  two generations fighting over it, and the queue is visible. Callers may pass
  ``on_queue(position)`` to :meth:`HFBackend.complete` / :meth:`HFBackend.stream`; it is called
  with 1, 2, ... while they wait (1 = next) and with 0 when their generation starts (see
  :mod:`raftweb.llm.limiter`). :meth:`HFBackend.waiting` tells how many are queued now.
- Generation runs in a thread; streaming uses a ``TextIteratorStreamer`` subclass that hands
  each piece of text to the caller's event loop. If the caller goes away (cancellation, or it
  stops iterating) generation is stopped at the next token and the lock is released only then.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import (
    BackendHealth,
    BadRequest,
    ChatBackend,
    ChatMessage,
    Completion,
    GenerationParams,
    LLMError,
    ModelNotFound,
    ModelSpec,
    ModelUnreachable,
    StreamEvent,
    Usage,
    monotonic,
)
from .limiter import FairLimiter, QueueCallback
from .registry import register_backend

if TYPE_CHECKING:  # torch/transformers are imported lazily: importing the engine stays cheap
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


# Hub reachability by URL: (when checked, reachable).
_HUB_CHECKS: dict[str, tuple[float, bool]] = {}
HUB_CHECK_TTL_S = 30.0


def hub_offline(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; anything else as given."""
    if device and device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def not_available_message(spec: ModelSpec) -> str:
    return (
        f"Model {spec.model!r} for {spec.setting} is not available locally and no model hub is "
        f"reachable. Point the profile at a local path (a folder with config.json) or switch it "
        f"to the 'openai' backend with a base URL."
    )


@dataclass(slots=True)
class _Loaded:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: str


class _CancelFlag:
    """A StoppingCriteria-compatible flag: generation stops at the next token once set."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def _async_streamer(tokenizer: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]):
    from transformers import TextIteratorStreamer

    class AsyncTextStreamer(TextIteratorStreamer):
        """Hands each finished piece of text to an asyncio queue on the caller's loop."""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                loop.call_soon_threadsafe(queue.put_nowait, text)
            # The end is signalled by the generation thread itself (with its result or error).

    return AsyncTextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


_END = object()


@register_backend("hf")
class HFBackend(ChatBackend):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()
        self.limiter = FairLimiter(1)

    # ----- locating and loading -----

    def _local_path(self) -> Path | None:
        path = Path(self.spec.model).expanduser()
        return path if path.exists() else None

    def _cached_config(self) -> str | None:
        """Path of config.json in the local HF cache for a hub id, without any network call."""
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(self.spec.model, "config.json")
        except Exception:  # noqa: BLE001 - an invalid repo id is simply "not cached"
            return None
        return found if isinstance(found, str) else None

    def _load_sync(self) -> _Loaded:
        with self._load_lock:  # a thread lock: callers on different loops load once
            if self._loaded is not None:
                return self._loaded
            from transformers import AutoModelForCausalLM, AutoTokenizer

            local = self._local_path()
            if local is not None and not (local / "config.json").exists():
                raise ModelNotFound(
                    f"Model folder {str(local)!r} for {self.spec.setting} has no config.json. "
                    f"Point the profile at a folder saved with save_pretrained, or switch it to "
                    f"the 'openai' backend with a base URL."
                )
            local_only = local is not None or hub_offline()
            device = resolve_device(self.spec.device)
            import torch

            try:
                tokenizer = AutoTokenizer.from_pretrained(
                    self.spec.model, local_files_only=local_only
                )
                model = AutoModelForCausalLM.from_pretrained(
                    self.spec.model,
                    local_files_only=local_only,
                    # Half precision on GPU as the checkpoint says; float32 on CPU, where
                    # bf16 kernels are slow or missing.
                    dtype="auto" if device.startswith("cuda") else torch.float32,
                )
            except OSError as exc:  # missing files / unreachable hub both arrive as OSError
                raise ModelNotFound(not_available_message(self.spec)) from exc
            if self.spec.adapter_path:
                model = self._with_adapter(model)
            model.to(device)
            model.eval()
            self._loaded = _Loaded(model, tokenizer, device)
            return self._loaded

    def _with_adapter(self, model: Any) -> Any:
        adapter = Path(self.spec.adapter_path).expanduser()
        if not (adapter / "adapter_config.json").exists():
            raise ModelNotFound(
                f"Adapter {self.spec.adapter_path!r} for {self.spec.setting} was not found (no "
                f"adapter_config.json there). Point the adapter path at a folder saved by peft, "
                f"or clear it."
            )
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(adapter))

    async def load(self) -> _Loaded:
        """Load now (in a worker thread) if not loaded yet; a no-op afterwards.

        A hub id that is neither cached nor downloadable (no hub reachable) fails at once with
        the message health shows, instead of after the hub client's retries (~45 s)."""
        if self._loaded is not None:
            return self._loaded
        if self._local_path() is None and not await asyncio.to_thread(self._cached_config):
            if hub_offline() or not await self._hub_reachable():
                raise ModelUnreachable(not_available_message(self.spec))
        return await asyncio.to_thread(self._load_sync)

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def waiting(self) -> int:
        """How many requests are queued behind the running generation."""
        return self.limiter.waiting

    def busy(self) -> bool:
        return self.limiter.active > 0

    # ----- generation helpers -----

    def _encode(self, loaded: _Loaded, messages: Sequence[ChatMessage]) -> dict[str, Any]:
        tokenizer = loaded.tokenizer
        dicts = [m.as_dict() for m in messages]
        if getattr(tokenizer, "chat_template", None):
            encoded = tokenizer.apply_chat_template(
                dicts, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        else:
            # A base model without a chat template: a plain transcript is the best we can do.
            text = "".join(f"{m['role']}: {m['content']}\n" for m in dicts) + "assistant: "
            encoded = tokenizer(text, return_tensors="pt")
        return {k: v.to(loaded.device) for k, v in encoded.items()}

    def _max_new_tokens(self, loaded: _Loaded, prompt_len: int, params: GenerationParams) -> int:
        """``params.max_tokens``, cut to what fits in the model's context (as vLLM refuses
        prompts that do not fit instead of producing garbage past the trained positions)."""
        context = getattr(loaded.model.config, "max_position_embeddings", None)
        if not context:
            return params.max_tokens
        if prompt_len >= context:
            raise BadRequest(
                f"The prompt is {prompt_len} tokens but model {self.spec.model!r} takes at most "
                f"{context}; shorten the context (fewer or smaller chunks)."
            )
        return min(params.max_tokens, context - prompt_len)

    def _generate_kwargs(
        self, loaded: _Loaded, params: GenerationParams, cancel: _CancelFlag, max_new_tokens: int
    ) -> dict[str, Any]:
        from transformers import StoppingCriteriaList

        tokenizer = loaded.tokenizer
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "stopping_criteria": StoppingCriteriaList([cancel]),
            "pad_token_id": tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id,
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
        return kwargs

    def _run_generate(
        self, loaded: _Loaded, inputs: dict[str, Any], kwargs: dict[str, Any], seed: int | None
    ) -> Any:
        import torch

        if seed is not None:
            # Global seeding is safe here: the limiter allows one generation at a time.
            torch.manual_seed(seed)
        with torch.inference_mode():
            return loaded.model.generate(**inputs, **kwargs)

    @staticmethod
    def _usage_and_reason(
        loaded: _Loaded, output: Any, prompt_len: int, max_new_tokens: int
    ) -> tuple[Usage, str, Any]:
        generated = output[0][prompt_len:]
        pad = loaded.tokenizer.pad_token_id
        if pad is not None and pad != loaded.tokenizer.eos_token_id:
            generated = generated[generated != pad]
        count = int(generated.shape[0])
        reason = "length" if count >= max_new_tokens else "stop"
        return Usage(prompt_len, count), reason, generated

    # ----- the interface -----

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        on_queue: QueueCallback | None = None,
    ) -> Completion:
        params = params or GenerationParams()
        # Loading happens inside the slot: a request behind a first, slow load learns its
        # queue position instead of waiting silently on the load lock.
        async with self.limiter.slot(on_queue):
            loaded = await self.load()
            start = monotonic()
            inputs = self._encode(loaded, messages)
            prompt_len = int(inputs["input_ids"].shape[1])
            max_new = self._max_new_tokens(loaded, prompt_len, params)
            cancel = _CancelFlag()
            kwargs = self._generate_kwargs(loaded, params, cancel, max_new)
            task = asyncio.ensure_future(
                asyncio.to_thread(self._run_generate, loaded, inputs, kwargs, params.seed)
            )
            try:
                output = await asyncio.shield(task)
            except asyncio.CancelledError:
                # Stop the thread and wait for it, so the lock really means "one at a time".
                cancel.event.set()
                await asyncio.gather(task, return_exceptions=True)
                raise
            except LLMError:
                raise
            except Exception as exc:
                raise LLMError(f"Generation with {self.spec.model!r} failed: {exc}") from exc
            latency = monotonic() - start
        usage, reason, generated = self._usage_and_reason(loaded, output, prompt_len, max_new)
        text = loaded.tokenizer.decode(generated, skip_special_tokens=True)
        return Completion(
            text=text, usage=usage, latency_s=latency, model=self.spec.model, finish_reason=reason
        )

    async def stream(  # type: ignore[override]
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        on_queue: QueueCallback | None = None,
    ) -> AsyncIterator[StreamEvent]:
        params = params or GenerationParams()
        loop = asyncio.get_running_loop()
        async with self.limiter.slot(on_queue):
            loaded = await self.load()
            start = monotonic()
            inputs = self._encode(loaded, messages)
            prompt_len = int(inputs["input_ids"].shape[1])
            cancel = _CancelFlag()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            max_new = self._max_new_tokens(loaded, prompt_len, params)
            kwargs = self._generate_kwargs(loaded, params, cancel, max_new)
            kwargs["streamer"] = _async_streamer(loaded.tokenizer, loop, queue)
            outcome: dict[str, Any] = {}

            def run() -> None:
                try:
                    outcome["output"] = self._run_generate(loaded, inputs, kwargs, params.seed)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's loop
                    outcome["error"] = exc
                finally:
                    try:
                        loop.call_soon_threadsafe(queue.put_nowait, _END)
                    except RuntimeError:  # the caller's loop is gone; nobody to tell
                        pass

            thread = threading.Thread(target=run, name="raftweb-hf-generate", daemon=True)
            thread.start()
            try:
                while True:
                    item = await queue.get()
                    if item is _END:
                        break
                    yield StreamEvent(delta=item)
            finally:
                if thread.is_alive():
                    # The caller stopped listening (or was cancelled): stop generating and
                    # wait, so the next request does not run beside this one.
                    cancel.event.set()
                    await asyncio.to_thread(thread.join)
            if "error" in outcome:
                exc = outcome["error"]
                raise LLMError(f"Generation with {self.spec.model!r} failed: {exc}") from exc
            usage, reason, _ = self._usage_and_reason(
                loaded, outcome["output"], prompt_len, max_new
            )
            yield StreamEvent(
                done=True, usage=usage, finish_reason=reason, latency_s=monotonic() - start
            )

    async def health(self) -> BackendHealth:
        """Whether the model can be loaded, without loading any weights."""
        if self._loaded is not None:
            return BackendHealth(
                True, f"Model {self.spec.model!r} is loaded on {self._loaded.device}."
            )
        local = self._local_path()
        if local is not None:
            if (local / "config.json").exists():
                return BackendHealth(
                    True, f"Model {self.spec.model!r} is available locally (not loaded yet)."
                )
            return BackendHealth(
                False,
                f"Model folder {str(local)!r} for {self.spec.setting} has no config.json. "
                f"Point the profile at a folder saved with save_pretrained, or switch it to the "
                f"'openai' backend with a base URL.",
            )
        if await asyncio.to_thread(self._cached_config):
            return BackendHealth(
                True, f"Model {self.spec.model!r} is in the local model cache (not loaded yet)."
            )
        if hub_offline() or not await self._hub_reachable():
            return BackendHealth(False, not_available_message(self.spec))
        return BackendHealth(
            True, f"Model {self.spec.model!r} will be downloaded from the model hub on first use."
        )

    async def _hub_reachable(self) -> bool:
        """A short HEAD to the hub (never a download) so health can tell the truth quickly.

        The answer is kept for HUB_CHECK_TTL_S: every chat turn asks before loading."""
        import httpx
        from huggingface_hub import constants

        url = f"{constants.ENDPOINT}/api/models/{self.spec.model}"
        cached = _HUB_CHECKS.get(url)
        if cached is not None and monotonic() - cached[0] < HUB_CHECK_TTL_S:
            return cached[1]
        try:
            # Under 2 s: the health page gives each check 3 s in all.
            async with httpx.AsyncClient(timeout=2.0) as client:
                response = await client.head(url)
            reachable = response.status_code < 400
        except (httpx.HTTPError, OSError):
            reachable = False
        _HUB_CHECKS[url] = (monotonic(), reachable)
        return reachable

    async def aclose(self) -> None:
        """Forget the loaded model (memory is freed once no generation still holds it)."""
        self._loaded = None
