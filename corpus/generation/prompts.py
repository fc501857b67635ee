"""Per-KB prompt overrides over the RAFT prompt set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corpus.dataset.services import QAError
from corpus.models import (
    KBPromptOverrides,
    KnowledgeBase,
)
from raftweb.raft.prompts import PromptSet


def kb_prompts(kb: KnowledgeBase) -> PromptSet:
    row = KBPromptOverrides.objects.filter(kb=kb).first()
    return PromptSet.with_overrides(row.overrides if row else None)


def kb_prompts_update(*, kb: KnowledgeBase, overrides: Mapping[str, Any]) -> KBPromptOverrides:
    unknown = PromptSet.unknown_keys(overrides)
    if unknown:
        raise QAError(f"unknown prompt name(s): {', '.join(unknown)}")
    clean = {k: v for k, v in overrides.items() if isinstance(v, str) and v.strip()}
    row, _ = KBPromptOverrides.objects.update_or_create(kb=kb, defaults={"overrides": clean})
    return row
