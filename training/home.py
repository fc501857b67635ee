"""What training puts on the home page (see raftweb/core/home.py): admins see running training
runs and the ones that failed lately."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from raftweb.core.home import home_section
from raftweb.core.roles import Role
from training.models import TrainingRun
from training.selectors import kb_runs, run_is_stale

MAX_RUNS = 5
RECENT_FAILURES = timedelta(days=7)


@home_section("training.runs", roles=(Role.ADMIN,), template="core/home/training.html", order=25)
def admin_runs(user: Any) -> dict[str, Any] | None:
    running = list(kb_runs().filter(status__in=TrainingRun.ACTIVE)[:MAX_RUNS])
    failed = list(
        kb_runs().filter(
            status=TrainingRun.Status.FAILED,
            created_at__gte=timezone.now() - RECENT_FAILURES,
        )[:MAX_RUNS]
    )
    if not running and not failed:
        return None
    return {
        "running": [{"run": r, "stale": run_is_stale(r)} for r in running],
        "failed": failed,
    }
