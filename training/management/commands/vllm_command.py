"""`manage.py vllm_command <kb-slug>`: the `vllm serve` command line that serves a KB's generator
adapters (the active one first) on their base model, under the names chat requests use."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from corpus.models import KnowledgeBase
from training.lora_serving import runtime_lora_enabled, vllm_serve_command
from training.models import ModelKind, ModelVersion
from training.selectors import active_version


class Command(BaseCommand):
    help = (
        "Print the `vllm serve` command for a knowledge base's generator adapters: base model, "
        "--enable-lora, --max-lora-rank and --lora-modules <kb>-v<id>=<path> (active first)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb_slug")

    def handle(self, *args: Any, **opts: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=opts["kb_slug"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {opts['kb_slug']!r}.")
        adapters = list(
            ModelVersion.objects.filter(kb=kb, kind=ModelKind.GENERATOR, is_adapter=True)
            .exclude(path="")
            .select_related("kb", "run")
            .order_by("-created_at", "-id")
        )
        if not adapters:
            raise CommandError(f"{kb.slug} has no generator adapter versions: train one first.")
        active = active_version(kb=kb, kind=ModelKind.GENERATOR)
        if active is not None and active.is_adapter and active in adapters:
            adapters.remove(active)
            adapters.insert(0, active)
        # One server serves one base model: adapters trained on another base are left out.
        base = adapters[0].base_model
        if not base:
            raise CommandError(f"{adapters[0].label} does not record its base model.")
        skipped = [v for v in adapters if v.base_model != base]
        for v in skipped:
            self.stderr.write(f"skipped {v.label}: its base model is {v.base_model or '(unknown)'}")
        command = vllm_serve_command(
            base_model=base,
            adapters=[v for v in adapters if v.base_model == base],
            runtime_lora=runtime_lora_enabled(),
        )
        self.stdout.write(command)
