from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "raftweb.core"
    label = "core"
    verbose_name = "RAFTweb core"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from raftweb.core import roles, tasks  # noqa: F401  (tasks registers the heartbeat)

        post_migrate.connect(roles.ensure_role_groups, sender=self)
