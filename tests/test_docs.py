"""The documentation runs as written: every Python block of README.md and docs/*.md, the generated
configuration reference, and the README's size (docs/testing.md describes the conventions)."""

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A block that cannot run here says why on the line right before its fence.
NOT_RUN = re.compile(r"^<!--\s*not-run:(?P<reason>.*?)-->\s*$")
FENCE = re.compile(r"^(?P<ticks>`{3,})(?P<info>.*)$")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, not_run_reason)`` of each top-level ```python block (blocks nested in a longer fence,
    e.g. an example inside ````markdown, are not code to run)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        ticks, info = opening["ticks"], opening["info"].strip()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(ticks) and not lines[j].strip("`")),
                   len(lines))  # fmt: skip
        if info.split()[:1] == ["python"]:
            marker = NOT_RUN.match(lines[i - 1]) if i > 0 else None
            blocks.append((i + 1, "\n".join(lines[i + 1 : end]) + "\n", marker["reason"].strip() if marker else None))
        i = end + 1
    return blocks


BLOCKS = [(page, line, code, reason) for page in PAGES for line, code, reason in python_blocks(page.read_text())]


def test_the_parser_finds_blocks_and_markers():
    text = (
        "```python\nx = 1\n```\n<!-- not-run: needs a GPU -->\n```python\nimport torch\n```\n"
        "````markdown\n```python\nnested = True\n```\n````\n```bash\nls\n```\n"
    )
    assert python_blocks(text) == [(1, "x = 1\n", None), (5, "import torch\n", "needs a GPU")]


def test_every_page_is_covered():
    names = {page.name for page in PAGES}
    assert {"README.md", "theory.md", "llm.md", "configuration.md", "paper_scale.md", "gap_laboratory.md",
            "reproduction.md", "testing.md"} <= names  # fmt: skip
    assert any(reason is None for *_, reason in BLOCKS)


@pytest.mark.parametrize(
    ("page", "line", "code", "reason"), BLOCKS, ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _, _ in BLOCKS]
)
def test_python_block_runs(page, line, code, reason, monkeypatch, capsys):
    if reason is not None:
        assert reason, f"{page}:{line}: a not-run marker must say why"
        compile(code, f"{page}:{line}", "exec")  # still valid Python
        return
    monkeypatch.chdir(ROOT)
    exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), {"__name__": "__docs__"})
    capsys.readouterr()


def test_configuration_reference_is_generated_from_the_config():
    generated = runpy.run_path(str(ROOT / "docs" / "generate_config_reference.py"))["reference"]()
    committed = (ROOT / "docs" / "configuration.md").read_text()
    fix = "docs/configuration.md is stale: python docs/generate_config_reference.py > docs/configuration.md"
    assert committed == generated, fix
    # Every table and field of `python -m llm run --help` (llm.config_files.describe_fields), with its help, is on
    # the page.
    from llm.config_files import describe_fields

    for line in describe_fields():
        name, _, help_text = line.partition("  # ")
        if name.startswith("["):
            assert f"`{name.strip()}`" in committed
        else:
            key = name.split(" = ")[0].rsplit(".", 1)[-1]
            assert f"| `{key}` |" in committed
            assert help_text.split(" [one of: ")[0].replace("|", "\\|") in committed


def test_configuration_reference_script_runs_from_anywhere(tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "generate_config_reference.py")], cwd=tmp_path,
                         capture_output=True, text=True, check=True, env=env)  # fmt: skip
    assert out.stdout == (ROOT / "docs" / "configuration.md").read_text()


def test_readme_fits_on_a_page_and_shows_the_headline_figures():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 10_240
    figures = re.findall(r"!\[[^\]]*\]\((docs/figures/[^)]+\.png)\)", text)
    assert len(set(figures)) >= 5 and all((ROOT / f).is_file() for f in figures)


def _generate_results() -> object:
    return runpy.run_path(str(ROOT / "docs" / "generate_results.py"))


def test_results_blocks_are_written_from_the_report():
    """Every results block of README.md and docs/*.md equals what docs/generate_results.py writes from
    docs/reproduction/: a hand-edited number, a leaked or missing row fails here."""
    generate = _generate_results()
    for page in generate["PAGES"]:
        text = page.read_text(encoding="utf-8")
        assert generate["regenerate"](text, page) == text, f"{page.relative_to(ROOT)}: run docs/generate_results.py"
    assert "<!-- results:claims -->" in (ROOT / "README.md").read_text()


def test_results_check_fails_on_a_leaked_row_and_a_changed_number(tmp_path):
    """The check itself: a row appended to a block, or one number changed in it, is reported as stale."""
    generate = _generate_results()
    page = ROOT / "README.md"
    text = page.read_text(encoding="utf-8")
    claims = text.index("<!-- /results:claims -->")
    leaked = text[:claims] + "| multi_token/verdicts.csv | 2377 |\n" + text[claims:]
    assert generate["regenerate"](leaked, page) != leaked
    block = text[text.index("<!-- results:claims -->") : claims]
    number = re.search(r"\d+\.\d+", block)
    changed = text.replace(block, block.replace(number.group(0), number.group(0) + "1", 1))
    assert changed != text and generate["regenerate"](changed, page) != changed


def test_relative_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: broken link {target}"
