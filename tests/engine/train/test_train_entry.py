"""``python -m raftweb.train.run``: dispatch by the config's kind, and flags for manual runs."""

from __future__ import annotations

import json
from pathlib import Path

from raftweb.train import generator, run
from raftweb.train.config import train_configs
from tests.engine.train.generator_runs import done_event, make_run_dir


def test_it_dispatches_on_the_kind_in_config_json() -> None:
    assert run.SCRIPTS["generator"] is generator.run
    assert set(run.SCRIPTS) <= set(train_configs.names())


def test_it_applies_flags_over_config_json_and_writes_them_back(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    run_dir = make_run_dir(tmp_path / "run", tiny_model_dir)
    before = json.loads((run_dir / "config.json").read_text())
    argv = ["--run-dir", str(run_dir), "--max-steps", "3", "--method", "lora", "--no-packing"]
    assert run.prepare_config(run_dir, argv) == "generator"
    after = json.loads((run_dir / "config.json").read_text())
    assert (after["max_steps"], after["method"], after["packing"]) == (3, "lora", False)
    assert {k: v for k, v in after.items() if k not in ("max_steps", "method")} == {
        k: v for k, v in before.items() if k not in ("max_steps", "method")
    }
    # No flags: config.json is the worker's and stays as it is.
    run.prepare_config(run_dir, ["--run-dir", str(run_dir)])
    assert json.loads((run_dir / "config.json").read_text()) == after


def test_it_starts_a_run_directory_from_a_preset(tmp_path: Path) -> None:
    run_dir = tmp_path / "new"
    argv = ["--run-dir", str(run_dir), "--preset", "cpu-smoke", "--base-model", "/models/x"]
    assert run.prepare_config(run_dir, argv) == "generator"
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["kind"], config["method"], config["base_model"]) == (
        "generator",
        "full",
        "/models/x",
    )


def test_it_fails_clearly_on_an_unknown_kind(tmp_path: Path, capsys) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"kind": "reranker"}))
    assert run.main(["--run-dir", str(tmp_path)]) == run.EXIT_USAGE
    done = done_event(tmp_path)
    assert done["status"] == "failed"
    assert "unknown training kind 'reranker'; choose one of: embedding, generator" in done["error"]
    assert "unknown training kind" in capsys.readouterr().err


def test_it_imports_without_django_or_torch() -> None:
    import subprocess
    import sys

    from tests.engine.train.generator_runs import ROOT, script_env

    code = (
        "import sys\n"
        "import raftweb.train.run, raftweb.train.config, raftweb.train.data\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'torch', 'trl'}))\n"
    )
    env = {k: v for k, v in script_env().items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"  # forms and the API import the configs cheaply
