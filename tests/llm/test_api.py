"""The package's public surface: importing it is light and changes nothing, and every exported name resolves."""

import json
import os
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import llm

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_layers_changes_no_environment_variable_and_loads_no_torch():
    script = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "import llm, theory, analysis, llm.config, llm.prompts\n"
        "print(json.dumps([dict(os.environ) == before, [m for m in ('torch', 'transformers', 'datasets') "
        "if m in sys.modules]]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    unchanged, heavy = json.loads(out.stdout)
    assert unchanged and heavy == []


def test_every_exported_name_is_the_function_or_class_even_after_every_submodule_is_imported():
    # A lazily exported name that is also a submodule's name would be shadowed by the module once imported.
    for module in pkgutil.iter_modules(llm.__path__):
        if module.name != "__main__":
            __import__(f"llm.{module.name}")
    for name in llm.__all__:
        assert not isinstance(getattr(llm, name), types.ModuleType), name


def test_command_line_flags_reach_the_run_and_the_sweep(tmp_path, monkeypatch, capsys):
    import llm.pipeline
    import llm.sweep
    from llm.__main__ import main

    calls = []
    summary = {"improvements": {}}
    monkeypatch.setattr(llm.pipeline, "run", lambda config, out, **kw: calls.append((config, kw)) or summary)
    monkeypatch.setattr(llm.sweep, "run_sweep", lambda config, runs, out, **kw: calls.append((config, kw)) or [])
    smoke = str(ROOT / "configs" / "smoke.toml")
    assert main(["run", "--config", smoke, "--out", str(tmp_path / "r"), "--no-progress", "--offline"]) == 0
    assert main(["sweep", "--config", smoke, "--out", str(tmp_path / "s"), "--thresholds", "0.1", "--no-progress"]) == 0
    assert main(["run", "--config", smoke, "--out", str(tmp_path / "r")]) == 0
    (run_config, run_kw), (sweep_config, sweep_kw), (default_config, default_kw) = calls
    assert run_config.model.offline and run_kw["progress"] is False and sweep_kw["progress"] is False
    assert not sweep_config.model.offline and not default_config.model.offline and default_kw["progress"] is True


def test_export_command_refuses_a_missing_run_with_exit_2(tmp_path, capsys):
    from llm.__main__ import main

    assert main(["export", str(tmp_path / "no-run"), str(tmp_path / "policy")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "policy").exists()
