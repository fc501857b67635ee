from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command


def test_it_creates_a_user_in_a_role_and_prints_the_password(db) -> None:
    out = StringIO()
    call_command("create_user", "rose", "--role", "Reviewer", stdout=out)
    user = get_user_model().objects.get(username="rose")
    assert list(user.groups.values_list("name", flat=True)) == ["reviewer"]
    password = out.getvalue().split("Password: ")[1].strip()
    assert user.check_password(password)


def test_it_rejects_an_unknown_role_and_creates_nothing(db) -> None:
    with pytest.raises(
        CommandError, match="Unknown role 'wizard'; choose one of: admin, reviewer, support"
    ):
        call_command("create_user", "rose", "--role", "wizard")
    assert not get_user_model().objects.filter(username="rose").exists()


def test_it_rejects_a_duplicate_user_and_keeps_the_original(db) -> None:
    call_command(
        "create_user",
        "rose",
        "--role",
        "support",
        "--password",
        "first-password",
        stdout=StringIO(),
    )
    with pytest.raises(CommandError, match="A user named 'rose' already exists"):
        call_command("create_user", "rose", "--role", "admin", "--password", "second-password")
    user = get_user_model().objects.get(username="rose")
    assert user.check_password("first-password")
    assert list(user.groups.values_list("name", flat=True)) == ["support"]
