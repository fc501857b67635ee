from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chat.scripted_llm import ScriptedLLM


@pytest.fixture
def scripted_llm() -> Iterator[ScriptedLLM]:
    """A real OpenAI-compatible server on loopback streaming scripted RAFT answers."""
    server = ScriptedLLM(token_delay_s=0.002).start()
    try:
        yield server
    finally:
        server.stop()
