from __future__ import annotations

import pytest
from django.test import Client


def test_it_sends_anonymous_users_to_login_everywhere_but_health(db) -> None:
    client = Client()
    for path in ["/", "/account/tokens/", "/settings/models/"]:
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next="), (
            path
        )
    assert client.get("/health").status_code == 200
    assert client.get("/api/health").status_code in {200, 503}


def test_it_logs_in_with_the_right_password(sam) -> None:
    client = Client()
    response = client.post("/login/", {"username": "sam", "password": "pw-sam"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("username", ["sam", "nobody"])
def test_it_refuses_a_wrong_password_without_saying_which_part_was_wrong(sam, username) -> None:
    client = Client()
    response = client.post("/login/", {"username": username, "password": "wrong"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "didn&#x27;t match" in body or "didn't match" in body
    assert "does not exist" not in body and "unknown user" not in body.lower()
    assert "_auth_user_id" not in client.session


def test_it_logs_out_with_post(sam, client_for) -> None:
    client = client_for(sam)
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_it_does_not_open_pages_that_merely_start_with_health(db, rf) -> None:
    from django.contrib.auth.models import AnonymousUser

    from raftweb.core.middleware import LoginRequiredMiddleware

    def some_view(request):  # a protected view, as every view is by default
        raise AssertionError("not reached")

    middleware = LoginRequiredMiddleware(lambda request: None)
    for path, open_ in [("/health", True), ("/healthz-admin/", False), ("/api/me", True)]:
        request = rf.get(path)
        request.user = AnonymousUser()
        response = middleware.process_view(request, some_view, (), {})
        assert (response is None) is open_, path
        if not open_:
            assert response.status_code == 302 and response["Location"].startswith("/login/")
