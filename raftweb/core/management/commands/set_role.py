"""`manage.py set_role USERNAME ROLE`: give an existing user exactly one role (recorded in the
audit log)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from raftweb.core.roles import Role
from raftweb.core.services import ServiceError, user_role_set


class Command(BaseCommand):
    help = "Change a user's role (admin, reviewer or support)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("role", help=f"one of: {', '.join(r.value for r in Role)}")

    def handle(self, *args: Any, **opts: Any) -> None:
        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"No user named {opts['username']!r}.")
        try:
            user_role_set(user=user, role=opts["role"])
        except (ValueError, ServiceError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{user.get_username()!r} is now {opts['role'].strip().lower()}.")
