"""Every page links a favicon, and /favicon.ico (which browsers ask for on their own) is no
longer a 404 — for visitors who are not logged in too."""

from __future__ import annotations

from typing import Any

from django.test import Client


def test_it_serves_the_favicon_to_anyone(db: Any) -> None:
    response = Client().get("/favicon.ico")
    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(response.streaming_content)
    assert "max-age=86400" in response["Cache-Control"]


def test_it_links_the_favicon_from_every_page(client_for: Any, alice: Any) -> None:
    for url in ("/login/", "/"):
        body = (client_for(alice) if url == "/" else Client()).get(url).content.decode()
        assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in body, url
