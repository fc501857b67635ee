from __future__ import annotations

import pytest

from raftweb.llm.catalog import (
    DEFAULT_CHAT_MODEL,
    DEFAULT_EMBEDDING_MODEL,
    ROLES,
    default_spec,
    default_specs_from_env,
)


def test_it_has_a_default_for_every_role() -> None:
    specs = default_specs_from_env({})
    assert tuple(specs) == ROLES == ("teacher", "judge", "student", "embedding")
    for role in ("teacher", "judge", "student"):
        assert specs[role].backend == "hf"
        assert specs[role].model == DEFAULT_CHAT_MODEL == "Qwen/Qwen2.5-0.5B-Instruct"
        assert role in specs[role].setting
    assert specs["embedding"].backend == "sentence-transformers"
    assert specs["embedding"].model == DEFAULT_EMBEDDING_MODEL == "all-MiniLM-L6-v2"


def test_it_applies_environment_overrides() -> None:
    specs = default_specs_from_env(
        {
            "RAFTWEB_JUDGE_BACKEND": "openai",
            "RAFTWEB_JUDGE_MODEL": "qwen-judge",
            "RAFTWEB_JUDGE_BASE_URL": "http://127.0.0.1:8001/v1",
            "RAFTWEB_JUDGE_API_KEY": "sk-local",
            "RAFTWEB_STUDENT_MODEL": "/models/student",
            "RAFTWEB_STUDENT_ADAPTER": "/runs/7/adapter",
            "RAFTWEB_EMBEDDING_MODEL": "/models/minilm-tuned",
            "RAFTWEB_TEACHER_MODEL": "   ",  # blank means "not set"
        }
    )
    judge = specs["judge"]
    assert (judge.backend, judge.model, judge.base_url, judge.api_key) == (
        "openai",
        "qwen-judge",
        "http://127.0.0.1:8001/v1",
        "sk-local",
    )
    assert specs["student"].model == "/models/student"
    assert specs["student"].adapter_path == "/runs/7/adapter"
    assert specs["embedding"].model == "/models/minilm-tuned"
    assert specs["teacher"] == default_spec("teacher")


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        (
            {"RAFTWEB_TEACHER_BACKEND": "magic"},
            ["RAFTWEB_TEACHER_BACKEND", "'magic'", "hf", "openai"],
        ),
        (
            {"RAFTWEB_EMBEDDING_BACKEND": "hf"},
            ["RAFTWEB_EMBEDDING_BACKEND", "sentence-transformers"],
        ),
        ({"RAFTWEB_JUDGE_BASE_URL": "localhost:8000"}, ["RAFTWEB_JUDGE_BASE_URL", "http"]),
        ({"RAFTWEB_JUDGE_BACKEND": "openai"}, ["RAFTWEB_JUDGE_BASE_URL"]),
        (
            {
                "RAFTWEB_STUDENT_BACKEND": "openai",
                "RAFTWEB_STUDENT_BASE_URL": "http://h:1/v1",
                "RAFTWEB_STUDENT_ADAPTER": "/a",
            },
            ["RAFTWEB_STUDENT_ADAPTER", "'hf'"],
        ),
    ],
)
def test_it_rejects_bad_values_naming_the_variable(
    environ: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(ValueError) as info:
        default_specs_from_env(environ)
    for name in names:
        assert name in str(info.value)


def test_it_rejects_an_unknown_role() -> None:
    with pytest.raises(ValueError, match="Unknown model role 'writer'"):
        default_spec("writer")
