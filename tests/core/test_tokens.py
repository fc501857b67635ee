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
