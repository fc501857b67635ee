from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from raftweb.core.roles import Role
from raftweb.core.services import ServiceError, user_create


class Command(BaseCommand):
    help = "Create a user in one role (admin, reviewer or support) and print the password."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--role", required=True, help=f"one of: {', '.join(r.value for r in Role)}"
        )
        parser.add_argument("--password", help="default: a random password, printed once")
        parser.add_argument("--email", default="")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            user, password = user_create(
                username=opts["username"],
                role=opts["role"],
                password=opts["password"],
                email=opts["email"],
            )
        except (ValueError, ServiceError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Created {opts['role'].lower()} user {user.get_username()!r}.")
        if not opts["password"]:
            self.stdout.write(f"Password: {password}")
