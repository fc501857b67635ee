"""Worker liveness: each worker writes a heartbeat at start-up and then every minute."""

from __future__ import annotations

from huey import crontab
from huey.contrib.djhuey import HUEY, db_periodic_task, on_startup


@on_startup()
def _heartbeat_on_start() -> None:
    if HUEY.immediate:  # tests and in-request runs have no worker to report
        return
    from django.db import close_old_connections

    from raftweb.core.services import heartbeat_record

    close_old_connections()
    heartbeat_record()


@db_periodic_task(crontab(minute="*"))
def worker_heartbeat() -> None:
    from raftweb.core.services import heartbeat_record

    heartbeat_record()
