"""The README's notebook example runs as printed (the bound calculators' documented entry point)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_block_after(heading: str) -> str:
    text = README.read_text()
    start = text.index(heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.DOTALL).group(1)


def test_notebook_example_runs(capsys):
    code = _python_block_after("## The exact solver in a notebook")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.count("\n") >= 3
    # What the example's comments promise: strong duality and a certified gap near zero.
    assert abs(namespace["sol"].value - namespace["ref"].value) < 1e-4 * (1 + abs(namespace["ref"].value))
    assert abs(namespace["cert"].duality_gap) < 1e-9
