"""The one way an API endpoint gets a knowledge base: one visibility rule for every router.

A caller must hold one of the endpoint's roles (any role when none is named); a KB the caller
may not see answers exactly like a missing one (404), so slugs do not leak.
"""

from __future__ import annotations

from django.http import HttpRequest

from corpus.knowledge.models import KnowledgeBase
from corpus.knowledge.selectors import kb_visible_by_slug
from raftweb.api_auth import require_role
from raftweb.core.roles import Role, user_roles
from raftweb.errors import Forbidden, NotFound


def api_kb(request: HttpRequest, slug: str, *roles: Role | str) -> KnowledgeBase:
    """The KB ``slug`` as the request's user may see it, after the role check."""
    if roles:
        require_role(request, *roles)
    elif not user_roles(request.user):
        raise Forbidden("Your role does not allow this.")
    kb = kb_visible_by_slug(request.user, slug)
    if kb is None:
        raise NotFound(f"No knowledge base {slug!r}.")
    return kb
