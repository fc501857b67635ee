"""Queries compiled once by the ORM and run with new values (raftweb/core/prepared.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest


@pytest.mark.django_db
def test_it_gives_the_rows_the_orm_would_give_for_any_value(sam, rita, api_token_for) -> None:
    from django.utils import timezone

    from raftweb.core.models import ApiToken
    from raftweb.core.prepared import PreparedQuery

    api_token_for(sam)
    api_token_for(rita)
    ApiToken.objects.filter(user=rita).update(last_used_at=timezone.now() - timedelta(days=2))

    def build(username: str) -> object:
        return ApiToken.objects.filter(user__username=username).values_list(
            "pk", "read_only", "last_used_at", "user__is_superuser", "user__groups__name"
        )

    query = PreparedQuery(build)
    for name in ("sam", "rita", "nobody", "sam"):
        # Converted as the ORM converts them (SQLite's datetimes and booleans included).
        assert query.rows(name) == list(build(name)), name
    assert isinstance(query.rows("rita")[0][2], type(timezone.now()))


@pytest.mark.django_db
def test_it_refuses_a_query_that_does_not_use_its_value_once() -> None:
    from raftweb.core.models import ApiToken
    from raftweb.core.prepared import PreparedQuery

    query = PreparedQuery(lambda value: ApiToken.objects.values_list("pk"))
    with pytest.raises(ValueError, match="exactly once"):
        query.rows("x")


@pytest.mark.django_db
def test_the_kb_lookup_by_slug_follows_the_visibility_rule(alice, rita, sam, mallory) -> None:
    from django.contrib.auth.models import Group

    from corpus.knowledge.selectors import kb_visible_by_slug, kbs_visible_to
    from corpus.knowledge.services import kb_create

    Group.objects.create(name="emea")
    Group.objects.create(name="apac")
    kb_create(name="Open", slug="open")
    kb_create(name="EMEA", slug="emea", allowed_groups=("emea",))
    kb_create(name="APAC", slug="apac", allowed_groups=("apac",))
    sam.groups.add(Group.objects.get(name="emea"))
    for user in (alice, rita, sam, mallory):
        for slug in ("open", "emea", "apac", "missing"):
            expected = kbs_visible_to(user).filter(slug=slug).first()
            found = kb_visible_by_slug(user, slug)
            assert (found and found.pk) == (expected and expected.pk), (user.username, slug)
            if found is not None:
                assert found.slug == slug and found.created_at == expected.created_at
    assert kb_visible_by_slug(sam, "emea") is not None  # in the group
    assert kb_visible_by_slug(rita, "emea") is None  # not in it
