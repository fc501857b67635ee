"""Each role logs in through the real login form in Chromium and sees its own navigation."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _installed(label: str) -> bool:
    from django.urls import NoReverseMatch, reverse

    from raftweb.core.nav import NAV

    try:
        reverse(next(i for i in NAV if i.label == label).url_name)
    except NoReverseMatch:
        return False
    return True


SEES = {"alice": "Models", "rita": "Review", "sam": "Chat"}
NEVER = {
    "alice": [],
    "rita": ["Models", "Knowledge bases"],
    "sam": ["Models", "Review", "Knowledge bases"],
    "mallory": ["Models", "Review", "Chat", "Knowledge bases"],
}


@pytest.mark.parametrize("username", ["alice", "rita", "sam", "mallory"])
def test_it_shows_each_role_its_navigation_in_a_browser(
    request, live_server, browser_login, username
) -> None:
    request.getfixturevalue(username)
    page = browser_login(live_server.url, username, f"pw-{username}")
    assert page.url.rstrip("/") == live_server.url.rstrip("/")
    nav = page.locator("nav.mainnav a").all_inner_texts()
    if username in SEES and _installed(SEES[username]):
        assert SEES[username] in nav
    for label in NEVER[username]:
        assert label not in nav
    if username == "mallory":
        assert nav == [] and page.get_by_text("Your account has no role yet").is_visible()
    else:
        assert "Home" in nav
    if username == "alice":
        assert "Models" in nav
        page.click("nav.mainnav >> text=Models")
        assert page.locator("h1").inner_text() == "Model profiles"
