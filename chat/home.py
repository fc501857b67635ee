"""What chat puts on the home page (see raftweb/core/home.py): support staff see the knowledge
bases they may chat with and their recent conversations."""

from __future__ import annotations

from typing import Any

from chat.selectors import chat_kbs_for, conversations_for
from raftweb.core.home import home_section
from raftweb.core.roles import Role

MAX_KBS = 12
MAX_CONVERSATIONS = 8


@home_section("chat.start", roles=(Role.SUPPORT,), template="core/home/chat.html", order=40)
def support_chat(user: Any) -> dict[str, Any]:
    return {
        "kbs": list(chat_kbs_for(user).order_by("name")[:MAX_KBS]),
        "conversations": list(conversations_for(user=user)[:MAX_CONVERSATIONS]),
    }
