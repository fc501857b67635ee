from __future__ import annotations

import re

from raftweb.core.models import ApiToken


def test_it_creates_a_token_shown_once_and_stored_hashed(sam, client_for) -> None:
    client = client_for(sam)
    response = client.post("/account/tokens/", {"name": "script"})
    assert response.status_code == 200
    raw = re.search(r'data-testid="new-token">([^<]+)<', response.content.decode()).group(1)
    token = ApiToken.objects.get(user=sam)
    assert token.token_hash == ApiToken.hash(raw) and raw not in token.token_hash
    assert raw not in client.get("/account/tokens/").content.decode()


def test_it_authenticates_the_api_with_a_token(sam, api_token_for, client) -> None:
    raw = api_token_for(sam)
    response = client.get("/api/me", headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 200
    assert response.json() == {"username": "sam", "roles": ["support"]}


def test_it_refuses_a_revoked_token_and_changes_nothing_else(
    sam, api_token_for, client_for, client
) -> None:
    keep = api_token_for(sam)
    revoke = api_token_for(sam)
    token = ApiToken.objects.get(token_hash=ApiToken.hash(revoke))
    assert client_for(sam).post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    response = client.get("/api/me", headers={"Authorization": f"Bearer {revoke}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert client.get("/api/me", headers={"Authorization": f"Bearer {keep}"}).status_code == 200
    assert sam.api_tokens.filter(revoked_at__isnull=True).count() == 1


def test_it_does_not_let_a_user_revoke_someone_elses_token(
    sam, rita, api_token_for, client_for, client
) -> None:
    raw = api_token_for(sam)
    token = ApiToken.objects.get(token_hash=ApiToken.hash(raw))
    client_for(rita).post(f"/account/tokens/{token.pk}/revoke/")
    assert client.get("/api/me", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    api = client.delete(
        f"/api/tokens/{token.pk}", headers={"Authorization": f"Bearer {api_token_for(rita)}"}
    )
    assert api.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_it_answers_401_not_a_csrf_error_for_a_bad_token_on_a_post(db, client) -> None:
    response = client.put(
        "/api/model-profiles/teacher",
        data="{}",
        content_type="application/json",
        headers={"Authorization": "Bearer rw_not-a-real-token"},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_a_token_request_reads_the_token_user_and_roles_in_one_query(
    sam, rita, api_token_for, django_assert_num_queries
) -> None:
    from django.contrib.auth.models import Group

    from raftweb.core.roles import Role, user_roles
    from raftweb.core.services import token_lookup

    # A group that is not a role (a KB restriction) must not read as one.
    sam.groups.add(Group.objects.create(name="emea-support"))
    raw_sam, raw_rita = api_token_for(sam), api_token_for(rita)
    token_lookup(raw_sam)  # the first use writes last_used_at
    token_lookup(raw_rita)
    with django_assert_num_queries(1):
        found = token_lookup(raw_sam)
        assert user_roles(found.user) == frozenset({Role.SUPPORT})
    assert found.user.pk == sam.pk and found.user.username == "sam" and found.user.is_active
    assert found.last_used_at is not None and found.last_used_at.tzinfo is not None
    with django_assert_num_queries(1):
        assert user_roles(token_lookup(raw_rita).user) == frozenset({Role.REVIEWER})
