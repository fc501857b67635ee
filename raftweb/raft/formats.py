"""Row layouts: the RaftRow record, exporters by registry and importers with per-line errors.

``hf`` rows are the public RAFT reference layout (``id, type, question, context{title,
sentences}, oracle_context, cot_answer, instruction``), so its datasets import here and ours
load with its tooling. ``chat`` and ``completion`` follow its format converter (chat:
``messages``; completion: ``prompt``/``completion``).
"""

from __future__ import annotations

import abc
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from raftweb.raft.answer import parse_answer
from raftweb.raft.prompts import DEFAULT_PROMPTS, PromptSet, build_instruction, build_messages
from raftweb.raft.quotes import verify_quotes
from raftweb.registry import Registry, UnknownChoice


@dataclass(slots=True)
class RaftRow:
    id: str
    question: str
    cot_answer: str
    final_answer: str
    context_ids: list[str]
    context_texts: list[str]
    context_titles: list[str]
    oracle_index: int | None
    split: str = "train"
    type: str = "general"
    oracle_text: str = ""
    oracle_id: str | None = None
    refusal: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def instruction(self) -> str:
        return build_instruction(self.question, self.context_texts)


# What the RAFT reference's format converter appends to every completion (its
# ``--output-completion-stop`` default): fine-tunes learn to end with it.
COMPLETION_STOP = "<STOP>"


class Exporter(abc.ABC):
    name: ClassVar[str]

    def __init__(
        self,
        *,
        system: str | None = None,
        prompts: PromptSet = DEFAULT_PROMPTS,
        stop: str = COMPLETION_STOP,
    ) -> None:
        # Only the chat layout uses system and prompts, only completion the stop; every
        # exporter accepts them so callers stay uniform.
        self.system = system
        self.prompts = prompts
        self.stop = stop

    @abc.abstractmethod
    def row(self, row: RaftRow) -> dict[str, Any]: ...

    def lines(self, rows: Iterable[RaftRow]) -> Iterator[str]:
        for row in rows:
            yield json.dumps(self.row(row), ensure_ascii=False) + "\n"


class UnknownExportFormat(UnknownChoice, ValueError):
    """An export format that is not registered: the registry's :class:`UnknownChoice`, and a
    ``ValueError`` as :func:`get_exporter` has always raised."""

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.kind, self.name, self.choices))


# Exporter classes by format name (``hf``, ``chat``, ``completion``, ``eval``). Like a dict of
# names, it supports ``name in EXPORTERS`` and ``sorted(EXPORTERS)``.
EXPORTERS: Registry[type[Exporter]] = Registry("export format")


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator: register ``cls`` as export format ``cls.name``.

    A name already taken by another class raises ``ValueError``.
    """
    EXPORTERS.add(cls.name, cls)
    return cls


def get_exporter(
    name: str,
    *,
    system: str | None = None,
    prompts: PromptSet = DEFAULT_PROMPTS,
    stop: str = COMPLETION_STOP,
) -> Exporter:
    """An exporter for format ``name``; an unknown name raises :class:`UnknownExportFormat`."""
    try:
        cls = EXPORTERS.get(name)
    except UnknownChoice as exc:
        raise UnknownExportFormat(exc.kind, name, exc.choices) from None
    return cls(system=system, prompts=prompts, stop=stop)


@register_exporter
class HfExporter(Exporter):
    name = "hf"

    def row(self, row: RaftRow) -> dict[str, Any]:
        titles = [t or "placeholder_title" for t in row.context_titles] or []
        return {
            "id": row.id,
            "type": row.type,
            "question": row.question,
            # The reference nests one list per row inside title/sentences; keep that shape.
            "context": {"title": [titles], "sentences": [list(row.context_texts)]},
            "oracle_context": row.oracle_text,
            "cot_answer": row.cot_answer,
            "instruction": row.instruction,
        }


@register_exporter
class ChatExporter(Exporter):
    name = "chat"

    def row(self, row: RaftRow) -> dict[str, Any]:
        # Same messages the chat and the evaluation send, so training matches inference.
        msgs = build_messages(
            row.question, row.context_texts, system=self.system, prompts=self.prompts
        )
        messages = [m.as_dict() for m in msgs]
        messages.append({"role": "assistant", "content": row.cot_answer})
        return {"messages": messages}


@register_exporter
class CompletionExporter(Exporter):
    name = "completion"

    def row(self, row: RaftRow) -> dict[str, Any]:
        return {"prompt": row.instruction, "completion": row.cot_answer + self.stop}


@register_exporter
class EvalExporter(Exporter):
    name = "eval"

    def row(self, row: RaftRow) -> dict[str, Any]:
        # The reference's eval layout first (question, gold_final_answer, context: the
        # instruction without its question line), RAFTweb's fields beside it.
        return {
            "question": row.question,
            "gold_final_answer": row.final_answer,
            "context": instruction_documents(row.context_texts),
            "id": row.id,
            "cot_answer": row.cot_answer,
            "oracle_chunk_id": row.oracle_id,
            "oracle_context": row.oracle_text,
            "context_chunk_ids": list(row.context_ids),
            "oracle_index": row.oracle_index,
            "refusal": row.refusal,
            "split": row.split,
            "instruction": row.instruction,
        }


# ---------------------------------------------------------------- import


@dataclass(slots=True)
class ImportedRecord:
    line: int
    question: str
    cot_answer: str
    final_answer: str
    context_texts: list[str] = field(default_factory=list)
    oracle_text: str = ""
    gold: list[str] = field(default_factory=list)
    quotes: list[str] = field(default_factory=list)
    source_format: str = "plain"
    # Kept as imported and exported back unchanged (the reference's row id, type, titles).
    id: str = ""
    type: str = ""
    context_titles: list[str] = field(default_factory=list)

    @property
    def oracle_index(self) -> int | None:
        """Where the oracle sits in the imported context: the document equal to the row's
        oracle text, else the one the answer quotes (most quotes found), else None."""
        if not self.context_texts:
            return None
        if self.oracle_text:
            for i, text in enumerate(self.context_texts):
                if text.strip() == self.oracle_text.strip():
                    return i
        if self.quotes:
            keys = [str(i) for i in range(len(self.context_texts))]
            checks = verify_quotes(self.quotes, dict(zip(keys, self.context_texts, strict=True)))
            hits = Counter(c.doc_key for c in checks if c.verified and c.doc_key is not None)
            if hits:
                return int(hits.most_common(1)[0][0])
        return None


@dataclass(frozen=True, slots=True)
class SkippedLine:
    """An input line the importer could not use, and why (reported back to the user)."""

    line: int
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "error": self.error}


@dataclass(slots=True)
class ImportResult:
    records: list[ImportedRecord] = field(default_factory=list)
    errors: list[SkippedLine] = field(default_factory=list)


_DOC_RE = re.compile(r"<DOCUMENT>(.*?)</DOCUMENT>", re.DOTALL)


def parse_import(data: str | bytes, *, filename: str = "") -> ImportResult:
    """Parse a JSONL (hf, chat, completion or plain) or CSV import; bad lines become errors."""
    text = data.decode("utf-8-sig", errors="replace") if isinstance(data, bytes) else data
    text = text.lstrip("\ufeff")
    if _looks_like_csv(text, filename):
        return _parse_csv(text)
    return _parse_jsonl(text)


def _looks_like_csv(text: str, filename: str) -> bool:
    if filename.lower().endswith(".csv"):
        return True
    if filename.lower().endswith((".jsonl", ".json", ".ndjson")):
        return False
    first = text.lstrip().split("\n", 1)[0]
    return not first.startswith(("{", "[")) and "question" in first.lower() and "," in first


def _parse_jsonl(text: str) -> ImportResult:
    result = ImportResult()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            result.errors.append(SkippedLine(lineno, f"invalid JSON: {exc.msg}"))
            continue
        if not isinstance(obj, dict):
            result.errors.append(SkippedLine(lineno, "expected a JSON object"))
            continue
        try:
            result.records.append(record_from_object(obj, lineno))
        except ValueError as exc:
            result.errors.append(SkippedLine(lineno, str(exc)))
    return result


def _parse_csv(text: str) -> ImportResult:
    result = ImportResult()
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        result.errors.append(SkippedLine(1, "empty CSV file"))
        return result
    header = {name.strip().lower(): name for name in reader.fieldnames if name}
    if "question" not in header or "answer" not in header:
        result.errors.append(SkippedLine(1, "CSV header must have 'question' and 'answer'"))
        return result
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append(SkippedLine(reader.line_num, f"invalid CSV: {exc}"))
            continue
        lineno = reader.line_num
        obj: dict[str, Any] = {k: row.get(v) for k, v in header.items()}
        if None in row:
            result.errors.append(SkippedLine(lineno, "too many fields"))
            continue
        try:
            result.records.append(record_from_object(obj, lineno))
        except ValueError as exc:
            result.errors.append(SkippedLine(lineno, str(exc)))
    return result


def record_from_object(obj: Mapping[str, Any], line: int) -> ImportedRecord:
    """One import record from an hf, chat, completion or plain question/answer object."""
    if "messages" in obj:
        return _from_chat(obj, line)
    if "cot_answer" in obj and ("instruction" in obj or "context" in obj):
        return _from_hf(obj, line)
    if "prompt" in obj and "completion" in obj:
        return _from_completion(obj, line)
    if "question" in obj:
        return _from_plain(obj, line)
    raise ValueError("unrecognised row: expected question/answer, hf, chat or completion fields")


def _str(value: Any, name: str, *, required: bool = True, strip: bool = True) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"missing {name}")
        return ""
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"{name} must be text")
    # Answers keep their whitespace: a row exported back must be the row imported.
    return str(value).strip() if strip else str(value)


def _gold(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except ValueError:
                raise ValueError("gold must be a list of document names") from None
        else:
            return [p.strip() for p in re.split(r"[|;]", stripped) if p.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("gold must be a list of document names")
    return [v.strip() for v in value if v.strip()]


def _answer_parts(answer: str) -> tuple[str, list[str]]:
    parsed = parse_answer(answer)
    final = parsed.final if parsed.parsed_ok and parsed.final else answer.strip()
    return final, parsed.quotes


def _from_plain(obj: Mapping[str, Any], line: int) -> ImportedRecord:
    question = _str(obj.get("question"), "question")
    # The RAFT reference's eval layout names the answer gold_final_answer and gives the
    # context as the instruction's documents.
    raw = obj.get("answer", obj.get("cot_answer", obj.get("gold_final_answer")))
    answer = _str(raw, "answer", strip=False)
    final, quotes = _answer_parts(answer)
    context = obj.get("context")
    docs = context if isinstance(context, list) else []
    if isinstance(context, str):
        docs = _DOC_RE.findall(context)
    return ImportedRecord(
        line=line,
        question=question,
        cot_answer=answer,
        final_answer=final,
        context_texts=[str(d) for d in docs],
        oracle_text=_str(obj.get("oracle_context"), "oracle_context", required=False),
        gold=_gold(obj.get("gold")),
        quotes=quotes,
        source_format="plain",
    )


def _flat(value: Any) -> list[str]:
    # Reference rows nest one list per row; accept a flat list too.
    raw = value if isinstance(value, list) else []
    if raw and isinstance(raw[0], list):
        raw = [s for group in raw for s in group]
    return [str(s) for s in raw]


def _from_hf(obj: Mapping[str, Any], line: int) -> ImportedRecord:
    question = _str(obj.get("question"), "question")
    answer = _str(obj.get("cot_answer"), "cot_answer", strip=False)
    final, quotes = _answer_parts(answer)
    sentences: list[str] = []
    titles: list[str] = []
    ctx = obj.get("context")
    if isinstance(ctx, Mapping):
        sentences = _flat(ctx.get("sentences"))
        titles = _flat(ctx.get("title"))
    elif isinstance(obj.get("instruction"), str):
        sentences = _DOC_RE.findall(obj["instruction"])
    return ImportedRecord(
        line=line,
        question=question,
        cot_answer=answer,
        final_answer=final,
        context_texts=sentences,
        oracle_text=_str(obj.get("oracle_context"), "oracle_context", required=False, strip=False),
        gold=_gold(obj.get("gold")),
        quotes=quotes,
        source_format="hf",
        id=_str(obj.get("id"), "id", required=False),
        type=_str(obj.get("type"), "type", required=False),
        context_titles=titles if len(titles) == len(sentences) else [],
    )


def _from_chat(obj: Mapping[str, Any], line: int) -> ImportedRecord:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise ValueError("messages must be a list of {role, content} objects")
    users = [m for m in messages if m.get("role") == "user"]
    assistants = [m for m in messages if m.get("role") == "assistant"]
    if not users or not assistants:
        raise ValueError("chat row needs a user and an assistant message")
    prompt = _str(users[-1].get("content"), "user content")
    answer = _str(assistants[-1].get("content"), "assistant content", strip=False)
    docs, question = split_instruction(prompt)
    if not question:
        raise ValueError("missing question after the documents")
    final, quotes = _answer_parts(answer)
    return ImportedRecord(
        line=line,
        question=question,
        cot_answer=answer,
        final_answer=final,
        context_texts=docs,
        gold=_gold(obj.get("gold")),
        quotes=quotes,
        source_format="chat",
    )


def _from_completion(obj: Mapping[str, Any], line: int) -> ImportedRecord:
    prompt = _str(obj.get("prompt"), "prompt")
    answer = _str(obj.get("completion"), "completion", strip=False).removesuffix(COMPLETION_STOP)
    docs, question = split_instruction(prompt)
    if not question:
        raise ValueError("missing question after the documents")
    final, quotes = _answer_parts(answer)
    return ImportedRecord(
        line=line,
        question=question,
        cot_answer=answer,
        final_answer=final,
        context_texts=docs,
        gold=_gold(obj.get("gold")),
        quotes=quotes,
        source_format="completion",
    )


def instruction_documents(texts: Sequence[str]) -> str:
    """The documents part of an instruction: what the reference's eval layout calls the
    ``context`` (the instruction without its last line, the question)."""
    return "\n".join(f"<DOCUMENT>{t}</DOCUMENT>" for t in texts)


def split_instruction(instruction: str) -> tuple[list[str], str]:
    """Inverse of :func:`build_instruction`: (documents, question)."""
    docs = _DOC_RE.findall(instruction)
    tail = instruction.rsplit("</DOCUMENT>", 1)[-1] if docs else instruction
    return docs, tail.strip()


def export_lines(
    rows: Iterable[RaftRow],
    fmt: str,
    *,
    system: str | None = None,
    prompts: PromptSet = DEFAULT_PROMPTS,
    stop: str = COMPLETION_STOP,
) -> Iterator[str]:
    return get_exporter(fmt, system=system, prompts=prompts, stop=stop).lines(rows)


def rows_to_jsonl(rows: Sequence[RaftRow], fmt: str, *, system: str | None = None) -> str:
    return "".join(export_lines(rows, fmt, system=system))
