"""User errors at every command line (issue 26): a message naming the file or field, exit 2, no traceback.

Each case below was a traceback (or a message naming no file) before; each is refused before any work.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _main(module: str):
    return importlib.import_module(module).main


def test_a_non_utf8_config_names_the_file(tmp_path, capsys):
    from llm.__main__ import main

    config = tmp_path / "bad.toml"
    config.write_bytes(b'[model]\nname = "tiny"\n\xff\xfe\n')  # before: UnicodeDecodeError traceback
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"error: config: {config} is not UTF-8 text" in err and "Traceback" not in err


def test_a_non_utf8_prompt_file_names_the_file(tmp_path):
    from llm.prompts import prompt_set

    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"prompt": "fine"}\n\xff\xfe not text\n')  # before: the decoder's message, no file
    with pytest.raises(ValueError, match=rf"{path}: not UTF-8 text .*save it as UTF-8"):
        prompt_set(f"file:{path}", None, 0)


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("analysis.next_token.__main__", ["--out", "{file}"], "--out: {file} is a file, not a folder"),
        ("analysis.parametrization_gap.__main__", ["--out", "{file}", "--quick"], "--out: {file} is a file"),
        ("paper_figures.__main__", ["all", "--no-produce", "--figures", "{file}"], "--figures: {file} is a file"),
        ("paper_figures.__main__", ["all", "--no-produce", "--results", "{file}"], "--results: {file} is a file"),
        ("paper_figures.fig3_dual_convergence", ["--results", "{dir}", "--out", "{file}"], "--out: {file} is a file"),
        ("benchmarks.solver_benchmark", ["--quick", "--out", "{file}"], "--out: {file} is a file"),
        ("benchmarks.threshold_sweep", ["--out", "{file}"], "--out: {file} is a file"),
    ],
)
def test_a_file_where_a_folder_belongs_is_refused_before_any_work(tmp_path, capsys, module, args, message):
    file = tmp_path / "file"
    file.write_text("x")
    fill = {"file": str(file), "dir": str(tmp_path)}
    assert _main(module)([a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err
    assert message.format(**fill) in err and "Traceback" not in err
    assert file.read_text() == "x"


def test_a_negative_seed_is_refused_and_leaves_nothing_that_blocks_the_next_run(tmp_path, capsys):
    main = _main("analysis.parametrization_gap.__main__")
    out = tmp_path / "gap"
    with pytest.raises(SystemExit) as exit_:  # argparse: usage and the message, exit status 2
        main(["--out", str(out), "--quick", "--seed", "-1"])
    assert exit_.value.code == 2
    assert "--seed: must be >= 0, got -1" in capsys.readouterr().err
    assert not out.exists()  # before: a config.json of seed -1 made the next --seed 0 fail


def test_a_missing_results_file_exits_2_naming_it(tmp_path, capsys):
    assert _main("paper_figures.fig3_dual_convergence")(["--results", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "dual_convergence_summary.csv not found" in err and "Traceback" not in err


def test_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path):
    # A file-size limit gives the same "[Errno 27] File too large" as the full disk, without the disk.
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from llm.run_files import write_atomic\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n    write_atomic(Path(sys.argv[1]), 'x' * 100000)\n"
        "except OSError as err:\n    print(err)\n"
    )
    target = tmp_path / "summary.json"
    run = subprocess.run([sys.executable, "-c", script, str(target)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.stdout.strip() == f"[Errno 27] File too large (writing {target})", run.stdout + run.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("alpha", ["0", "-1.0"])
def test_a_lora_alpha_that_never_moves_the_policy_is_refused(tmp_path, capsys, alpha):
    from llm.__main__ import main

    config = tmp_path / "run.toml"
    config.write_text('[model]\nname = "tiny"\ntrain = "lora"\n')
    args = ["run", "--config", str(config), "--out", str(tmp_path / "run"), "--set", f"model.lora_alpha={alpha}"]
    assert main(args) == 2  # before: accepted, and LoRA's update (alpha / r) B A stayed zero
    assert "model.lora_alpha: must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
