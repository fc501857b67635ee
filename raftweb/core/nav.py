"""The navigation: one list, filtered per user. Entries whose URL is not installed yet are
skipped, so an app adds its page to the nav just by defining the URL name."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import NoReverseMatch, reverse

from raftweb.core.roles import Role, user_has_role


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    url_name: str
    roles: tuple[Role, ...]


NAV: tuple[NavItem, ...] = (
    NavItem("Home", "core:home", (Role.ADMIN, Role.REVIEWER, Role.SUPPORT)),
    NavItem("Knowledge bases", "corpus:kb_list", (Role.ADMIN,)),
    NavItem("Generation", "generation:list", (Role.ADMIN,)),
    NavItem("Review", "review:queue", (Role.REVIEWER, Role.ADMIN)),
    NavItem("Training", "training:home", (Role.ADMIN,)),
    NavItem("Evaluation", "evaluation:home", (Role.ADMIN, Role.REVIEWER)),
    NavItem("Chat", "chat:home", (Role.SUPPORT, Role.ADMIN)),
    NavItem("Feedback", "chat:feedback_list", (Role.ADMIN,)),
    NavItem("Models", "core:profiles", (Role.ADMIN,)),
    NavItem("Audit log", "core:audit", (Role.ADMIN,)),
)


def nav_for(user: object, current_path: str = "") -> list[dict[str, object]]:
    items = []
    for item in NAV:
        if not user_has_role(user, *item.roles):
            continue
        try:
            url = reverse(item.url_name)
        except NoReverseMatch:
            continue
        items.append({"label": item.label, "url": url, "active": False, "name": item.url_name})
    # The longest URL that prefixes the current path is the active one (/generation/kb/x/prompts/
    # is "Generation", not also "Review").
    matches = [
        i
        for i in items
        if current_path == i["url"] or (i["url"] != "/" and current_path.startswith(i["url"]))
    ]
    if matches:
        max(matches, key=lambda i: len(i["url"]))["active"] = True
    return items
