"""The training entry point: ``python -m raftweb.train.run --run-dir DIR``.

Reads ``DIR/config.json``, and runs the script of its ``kind`` (see :data:`SCRIPTS`), which
follows the run-directory contract of :mod:`raftweb.train` and returns the exit code:
0 succeeded, 1 failed, 3 cancelled (the ``done`` event in ``metrics.jsonl`` says the same).
The worker starts it so; so can a person on a GPU host with a copied run directory, also
under ``accelerate launch -m raftweb.train.run --run-dir DIR``.

For manual runs, settings can be given as flags (those of the kind's config, e.g.
``--base-model``, ``--method``, ``--max-steps``) and ``--preset NAME``; they are applied over
``config.json`` and written back to it before the script starts, so that a re-run (a resume)
trains with the same settings. With no ``config.json`` yet, ``--kind`` (default generator)
says which config to start from::

    python -m raftweb.train.run --run-dir runs/7 --preset cpu-smoke --base-model ./tiny
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from raftweb.errors import RaftwebError
from raftweb.registry import UnknownChoice
from raftweb.train import embedding, generator
from raftweb.train.config import (
    config_for,
    preset_names,
    preset_values,
    resolve_config,
    train_configs,
)
from raftweb.typedconfig import add_arguments, values_from_args

# Kind -> the script's ``run(run_dir) -> exit code``.
SCRIPTS: dict[str, Callable[[Path], int]] = {
    generator.KIND: generator.run,
    embedding.KIND: embedding.run,
}

EXIT_USAGE = 2


def _parser(kind: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m raftweb.train.run",
        description="Run a training script on a run directory (see raftweb/train/__init__.py).",
    )
    parser.add_argument("--run-dir", required=True, type=Path, help="the run directory")
    parser.add_argument(
        "--kind",
        choices=train_configs.names(),
        help="the config kind when DIR has no config.json yet (default: generator)",
    )
    parser.add_argument(
        "--preset", help=f"apply a recipe before the flags ({', '.join(preset_names())})"
    )
    if kind is not None and kind in train_configs:
        add_arguments(parser, config_for(kind), skip=("kind",))
    return parser


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def prepare_config(run_dir: Path, argv: Sequence[str]) -> str:
    """Apply the preset and flags in ``argv`` to ``run_dir/config.json`` (written back when
    anything was given); returns the kind."""
    first, _ = _parser(None).parse_known_args(argv)
    path = run_dir / "config.json"
    current = _read_json(path) if path.is_file() else {}
    kind = str(current.get("kind") or first.kind or generator.KIND)
    options = vars(_parser(kind).parse_args(argv))
    given = values_from_args(config_for(kind), options)
    if not path.is_file() or given or options.get("preset"):
        current.pop("kind", None)
        current.pop("preset", None)
        # The file's values stay unless the preset or a flag changes them.
        preset = options.get("preset")
        recipe = preset_values(preset, kind) if preset else {}
        merged = resolve_config(kind, None, {**current, **recipe, **given}).to_dict()
        if generator.is_main_process():  # every process computes the same; one writes
            run_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(merged, indent=2, ensure_ascii=False))
            os.replace(tmp, path)
        else:
            _wait_for_config(path, merged)  # the script reads the file: wait for the main's write
    return kind


def _wait_for_config(path: Path, expected: dict[str, Any], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _read_json(path) == expected:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise ValueError(f"{path} was not updated by the main process within {timeout:g} s")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first, _ = _parser(None).parse_known_args(argv)
    run_dir: Path = first.run_dir
    try:
        kind = prepare_config(run_dir, argv)
        script = SCRIPTS.get(kind)
        if script is None:
            raise UnknownChoice("training script", kind, sorted(SCRIPTS))
    except (RaftwebError, UnknownChoice, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        print(f"error: {message}", file=sys.stderr)
        if run_dir.is_dir() and generator.is_main_process():
            generator.Events(run_dir / generator.METRICS_FILE).write(
                "done", status="failed", error=message, metrics={}
            )
        return EXIT_USAGE
    return script(run_dir)


if __name__ == "__main__":
    sys.exit(main())
