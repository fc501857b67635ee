"""Fine-tuning runs, model versions and evaluation runs (see DESIGN.md; built in a later issue)."""

from __future__ import annotations
