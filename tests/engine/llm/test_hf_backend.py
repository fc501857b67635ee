from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from raftweb.llm import (
    BadRequest,
    ChatMessage,
    GenerationParams,
    ModelNotFound,
    ModelSpec,
    StreamEvent,
)
from raftweb.llm.hf_backend import HFBackend

MESSAGES = [
    ChatMessage("system", "Answer from the documents."),
    ChatMessage("user", "How long do refunds take?"),
]


def _backend(model: str | Path, **kwargs: object) -> HFBackend:
    spec = ModelSpec(
        backend="hf", model=str(model), device="cpu", setting="model profile 'student'", **kwargs
    )  # type: ignore[arg-type]
    return HFBackend(spec)


def _reference_generate(model_dir: Path, max_new_tokens: int) -> tuple[str, int]:
    """What plain transformers produces for MESSAGES: the backend must match it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tokenizer.apply_chat_template(
        [m.as_dict() for m in MESSAGES],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    return tokenizer.decode(output[0][prompt_len:], skip_special_tokens=True), prompt_len


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> tuple[str, int]:
    return _reference_generate(tiny_model_dir, 12)


async def test_it_completes_like_plain_transformers(
    tiny_model_dir: Path, reference: tuple[str, int]
) -> None:
    backend = _backend(tiny_model_dir)
    assert not backend.loaded
    completion = await backend.complete(MESSAGES, GenerationParams(max_tokens=12))
    text, prompt_len = reference
    assert backend.loaded
    assert completion.text == text
    assert completion.usage.prompt_tokens == prompt_len
    assert completion.usage.completion_tokens == 12
    assert completion.finish_reason == "length"
    assert completion.latency_s > 0
    assert completion.model == str(tiny_model_dir)


async def test_it_streams_pieces_that_add_up_to_the_completion(
    tiny_model_dir: Path, reference: tuple[str, int]
) -> None:
    backend = _backend(tiny_model_dir)
    events: list[StreamEvent] = [
        e async for e in backend.stream(MESSAGES, GenerationParams(max_tokens=12))
    ]
    deltas = [e.delta for e in events if not e.done]
    assert len(deltas) >= 2
    assert "".join(deltas) == reference[0]
    final = events[-1]
    assert final.done and [e.done for e in events].count(True) == 1
    assert final.usage is not None and final.usage.completion_tokens == 12
    assert final.usage.prompt_tokens == reference[1]
    assert final.finish_reason == "length"
    assert final.latency_s is not None and final.latency_s > 0


async def test_it_samples_reproducibly_with_a_seed(tiny_model_dir: Path) -> None:
    backend = _backend(tiny_model_dir)
    params = GenerationParams(max_tokens=10, temperature=1.0, seed=7)
    first = await backend.complete(MESSAGES, params)
    second = await backend.complete(MESSAGES, params)
    assert first.text == second.text


async def test_it_applies_a_peft_adapter(
    tiny_model_dir: Path, tmp_path: Path, reference: tuple[str, int]
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(3)
    # init_lora_weights=False: random (non-zero) B matrices, so the adapter visibly changes outputs.
    config = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    adapted = get_peft_model(base, config)
    adapter_dir = tmp_path / "adapter"
    adapted.save_pretrained(adapter_dir)

    backend = _backend(tiny_model_dir, adapter_path=str(adapter_dir))
    completion = await backend.complete(MESSAGES, GenerationParams(max_tokens=12))

    inputs = backend._encode(await backend.load(), MESSAGES)
    with torch.inference_mode():
        expected_ids = adapted.eval().generate(**inputs, max_new_tokens=12, do_sample=False)
    expected = backend._loaded.tokenizer.decode(  # type: ignore[union-attr]
        expected_ids[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    assert completion.text == expected
    assert completion.text != reference[0]


async def test_it_names_the_setting_when_an_adapter_is_missing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    backend = _backend(tiny_model_dir, adapter_path=str(tmp_path / "no-adapter"))
    with pytest.raises(ModelNotFound) as info:
        await backend.complete(MESSAGES)
    assert "model profile 'student'" in str(info.value)
    assert "no-adapter" in str(info.value)


async def test_it_names_the_setting_when_the_model_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = _backend("raftweb-tests/no-such-model")
    with pytest.raises(ModelNotFound) as info:
        await backend.complete(MESSAGES)
    assert str(info.value) == (
        "Model 'raftweb-tests/no-such-model' for model profile 'student' is not available locally "
        "and no model hub is reachable. Point the profile at a local path (a folder with "
        "config.json) or switch it to the 'openai' backend with a base URL."
    )
    health = await backend.health()
    assert not health.ok and health.detail == str(info.value)

    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(ModelNotFound, match="has no config.json"):
        await _backend(empty).complete(MESSAGES)


async def test_it_reports_health_without_loading_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    backend = _backend(tiny_model_dir)
    health = await backend.health()
    assert health.ok and "not loaded" in health.detail
    assert not backend.loaded
    await backend.load()
    assert (await backend.health()).detail.endswith("is loaded on cpu.")
    (tmp_path / "weights-only").mkdir()
    broken = await _backend(tmp_path / "weights-only").health()
    assert not broken.ok and "model profile 'student'" in broken.detail


async def test_it_runs_one_generation_at_a_time_and_shows_the_queue(tiny_model_dir: Path) -> None:
    backend = _backend(tiny_model_dir)
    await backend.load()
    params = GenerationParams(max_tokens=24)
    positions: list[int] = []
    first = asyncio.create_task(backend.complete(MESSAGES, params))
    await asyncio.sleep(0)
    second = asyncio.create_task(backend.complete(MESSAGES, params, on_queue=positions.append))
    for _ in range(100):
        if backend.waiting() == 1:
            break
        await asyncio.sleep(0.005)
    assert backend.busy() and backend.waiting() == 1
    one, two = await asyncio.gather(first, second)
    await asyncio.sleep(0.01)
    assert positions == [1, 0]
    assert one.text == two.text
    assert not backend.busy() and backend.waiting() == 0


async def test_it_stops_generating_when_the_listener_goes_away(tiny_model_dir: Path) -> None:
    backend = _backend(tiny_model_dir)
    stream = backend.stream(MESSAGES, GenerationParams(max_tokens=2000))
    first = await anext(stream)
    assert first.delta and not first.done
    # Closing the stream must stop the thread (not let it run 2000 tokens) and free the lock.
    await asyncio.wait_for(stream.aclose(), timeout=10)
    assert not backend.busy()
    completion = await asyncio.wait_for(
        backend.complete(MESSAGES, GenerationParams(max_tokens=3)), 10
    )
    assert completion.usage.completion_tokens == 3


async def test_it_stops_generating_when_the_caller_is_cancelled(tiny_model_dir: Path) -> None:
    backend = _backend(tiny_model_dir)
    await backend.load()
    task = asyncio.create_task(backend.complete(MESSAGES, GenerationParams(max_tokens=2000)))
    for _ in range(200):
        if backend.busy():
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not backend.busy()


async def test_it_refuses_a_prompt_longer_than_the_context(tiny_model_dir: Path) -> None:
    backend = _backend(tiny_model_dir)
    too_long = [ChatMessage("user", "word " * 3000)]  # > the tiny model's 2048 positions
    with pytest.raises(BadRequest, match="takes at most 2048"):
        await backend.complete(too_long, GenerationParams(max_tokens=5))
    assert not backend.busy()
    # Near the limit, max_tokens is cut to what still fits.
    near = [ChatMessage("user", "word " * 1010)]
    completion = await backend.complete(near, GenerationParams(max_tokens=100))
    assert completion.usage.prompt_tokens + completion.usage.completion_tokens == 2048
    assert completion.finish_reason == "length"


async def test_a_hub_model_with_no_hub_reachable_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not after the hub client's retries (~45 s): chat says so at once, as a 503."""
    import time

    from huggingface_hub import constants

    from raftweb.llm import BackendUnavailable, ModelUnreachable
    from raftweb.testing.scripted_llm import free_port

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    backend = _backend("raftweb-tests/not-cached-anywhere")
    started = time.monotonic()
    with pytest.raises(ModelUnreachable, match="no model hub is reachable") as info:
        await backend.complete(MESSAGES)
    assert isinstance(info.value, BackendUnavailable) and isinstance(info.value, ModelNotFound)
    with pytest.raises(ModelUnreachable):
        [e async for e in backend.stream(MESSAGES)]
    assert time.monotonic() - started < 5
    assert not (await backend.health()).ok
