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
