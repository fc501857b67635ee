from __future__ import annotations

import re

import pytest
from django.urls import NoReverseMatch, reverse

from raftweb.core.nav import NAV

# What each role may see in the navigation (the product's permission matrix).
EXPECTED = {
    "alice": {
        "Home",
        "Knowledge bases",
        "Generation",
        "Review",
        "Training",
        "Evaluation",
        "Chat",
        "Feedback",
        "Models",
        "Audit log",
    },
    "rita": {"Home", "Review", "Evaluation"},
    "sam": {"Home", "Chat"},
    "mallory": set(),
}


def _installed(label: str) -> bool:
    item = next(i for i in NAV if i.label == label)
    try:
        reverse(item.url_name)
    except NoReverseMatch:
        return False
    return True


def _nav_labels(html: str) -> set[str]:
    nav = re.search(r'<nav class="mainnav"[^>]*>(.*?)</nav>', html, re.S).group(1)
    return set(re.findall(r">([^<]+)</a>", nav))


@pytest.mark.parametrize("username", list(EXPECTED))
def test_it_shows_each_role_only_its_navigation(request, client_for, username) -> None:
    user = request.getfixturevalue(username)
    response = client_for(user).get("/")
    assert response.status_code == 200
    expected = {label for label in EXPECTED[username] if _installed(label)}
    assert _nav_labels(response.content.decode()) == expected


@pytest.mark.parametrize(
    ("username", "status"), [("alice", 200), ("rita", 403), ("sam", 403), ("mallory", 403)]
)
def test_it_guards_admin_pages_by_role(request, client_for, username, status) -> None:
    user = request.getfixturevalue(username)
    assert client_for(user).get("/settings/models/").status_code == status


def test_it_marks_only_the_most_specific_entry_active(alice) -> None:
    from raftweb.core.nav import nav_for

    active = [i["label"] for i in nav_for(alice, "/generation/3/") if i["active"]]
    assert active == (
        ["Generation"] if _installed("Generation") else ["Review"] if _installed("Review") else []
    )
    assert [i["label"] for i in nav_for(alice, "/") if i["active"]] == ["Home"]
