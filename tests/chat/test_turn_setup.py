"""What a chat turn reads before it answers: the per-question access check (same answer as
conversation_get, fewer queries) and the memoised model set-up (fresh after a change)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from django.contrib.auth.models import Group


@pytest.mark.django_db
def test_the_turn_access_check_agrees_with_conversation_get_for_every_role_and_kb() -> None:
    from django.contrib.auth import get_user_model

    from chat.selectors import conversation_get, conversation_usable
    from chat.services import conversation_create
    from corpus.knowledge.services import kb_create
    from raftweb.core.services import user_create

    User = get_user_model()
    emea = Group.objects.create(name="emea")
    Group.objects.create(name="apac")
    users = {
        role: user_create(username=role, role=role, password="pw")[0]
        for role in ("admin", "support", "reviewer")
    }
    users["norole"] = User.objects.create_user(username="norole", password="pw")
    users["root"] = User.objects.create_superuser(username="root", password="pw")
    users["emea_support"] = user_create(username="es", role="support", password="pw")[0]
    users["emea_support"].groups.add(emea)
    users["emea_reviewer"] = user_create(username="er", role="reviewer", password="pw")[0]
    users["emea_reviewer"].groups.add(emea)
    users["gone"] = user_create(username="gone", role="support", password="pw")[0]
    kbs = [
        kb_create(name="Open", slug="open"),
        kb_create(name="EMEA", slug="emea", allowed_groups=("emea",)),
        kb_create(name="APAC", slug="apac", allowed_groups=("apac",)),
        kb_create(name="Both", slug="both", allowed_groups=("emea", "apac")),
    ]
    conversations = [conversation_create(owner=u, kb=kb) for u in users.values() for kb in kbs]
    User.objects.filter(pk=users["gone"].pk).update(is_active=False)

    outcomes = set()
    for user in users.values():
        for conversation in conversations:
            fresh = User.objects.get(pk=user.pk)
            expected = conversation_get(user=fresh, conversation_id=conversation.pk) is not None
            got = conversation_usable(user_id=user.pk, conversation_id=conversation.pk)
            assert got == expected, (user.username, conversation.kb.slug, conversation.owner_id)
            outcomes.add(got)
    assert outcomes == {True, False}  # the matrix exercises both answers
    assert not conversation_usable(user_id=users["admin"].pk, conversation_id=10**9)


@pytest.mark.django_db(transaction=True)
def test_the_chat_model_follows_a_profile_change_at_once_in_process_and_within_the_ttl_elsewhere(
    settings: Any,
) -> None:
    from chat.services import CHAT_MODELS, chat_model
    from corpus.knowledge.services import kb_create
    from raftweb.core.models import ModelProfile
    from raftweb.core.services import profile_update

    settings.CONFIG_TTL_S = 0.5
    kb = kb_create(name="KB", slug="kb")
    base = {"role": "student", "user": None, "backend": "openai"}
    profile_update(**base, model="first", base_url="http://127.0.0.1:9/v1")

    def model_name() -> str:
        return asyncio.run(chat_model(kb)).model_name

    assert model_name() == "first"
    loads = CHAT_MODELS.loads
    assert model_name() == "first" and CHAT_MODELS.loads == loads  # read from the memo

    # Saved in this process (the settings page, the API): the next question sees it.
    profile_update(**base, model="second", base_url="http://127.0.0.1:9/v1")
    assert model_name() == "second"

    # Changed without this process hearing of it (another process): seen within the TTL.
    ModelProfile.objects.filter(role="student").update(model="third")
    assert model_name() == "second"
    time.sleep(0.6)
    model_name()  # the expired entry: this caller reloads
    assert model_name() == "third"
