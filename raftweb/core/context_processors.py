from __future__ import annotations

from django.http import HttpRequest

from raftweb.core.nav import nav_for
from raftweb.core.roles import user_roles


def navigation(request: HttpRequest) -> dict[str, object]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "user_role_names": []}
    return {
        "nav_items": nav_for(user, request.path),
        "user_role_names": sorted(r.value for r in user_roles(user)),
    }
