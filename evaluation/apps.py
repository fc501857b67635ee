from __future__ import annotations

from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"
    verbose_name = "Evaluation runs and dashboards"

    def ready(self) -> None:
        # The promotion gate: training asks registered gates before activating a version, so
        # training never imports this app (the dependency points from evaluation to training).
        from evaluation.gate import register

        register()
