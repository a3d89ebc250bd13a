"""The command line's conventions: --version, -h, shell completion, help that shows what to type,
one-line usage errors, and `compare --json`."""

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from tests.conftest import ROOT, run_cli
from tests.test_compare import MNIST, SYNTHETIC, mixed  # noqa: F401 (mixed: a fixture)


def commands() -> list[tuple[str, ...]]:
    """Every command and subcommand, as its words on the command line."""
    from typer.main import get_command

    from pipeline import cli

    found = []

    def walk(group, words):
        for name, command in group.commands.items():
            found.append((*words, name))
            if hasattr(command, "commands"):
                walk(command, (*words, name))

    walk(get_command(cli.app), ())
    return found


def test_version(tmp_path):
    for flag in ("--version", "-V"):
        proc = run_cli(flag, cwd=tmp_path)
        assert proc.stdout == f"pipeline {version('pipeline')}\n" and proc.stderr == ""


def test_every_command_has_a_full_and_a_short_help_option(tmp_path):
    listed = commands()
    assert ("prepare",) in listed and ("metrics", "diff") in listed
    for words in [(), *listed]:
        long = run_cli(*words, "--help", cwd=tmp_path, env={"COLUMNS": "200"})
        short = run_cli(*words, "-h", cwd=tmp_path, env={"COLUMNS": "200"})
        assert short.stdout == long.stdout and f"Usage: {' '.join(('pipeline', *words))} " in long.stdout, words
        assert re.search(r"--help\s+-h\s", long.stdout), words


def test_help_shows_what_to_type(tmp_path):
    """No Python types (`<bool>` beside a flag, `<list[str]>`), no default swallowed by rich markup,
    choices as choices, each with its default."""
    env = {"COLUMNS": "250"}
    for words in [(), *commands()]:
        text = run_cli(*words, "--help", cwd=tmp_path, env=env).stdout
        for glitch in ("<bool>", "list[", "<list", "Path]"):
            assert glitch not in text, (words, glitch)
        assert not re.search(r"\w \.\s", text), words  # what rich markup leaves of a swallowed "[default: ...]"
    root = run_cli("--help", cwd=tmp_path, env=env).stdout
    assert re.search(r"-S\s+KEY=VALUE\s.*\(repeatable\)", root)
    assert "Params file. [default: (params.yaml)]" in root
    assert re.search(r"--version\s+-V\s", root)
    assert "--install-completion" in root and "--show-completion" in root
    prepare = run_cli("prepare", "--help", cwd=tmp_path, env=env).stdout
    for option, choices, default in (
        ("--aspect", "stretch|pad|center-crop", "prepare.aspect"),
        ("--color", "rgb|grayscale", "prepare.color"),
        ("--engine", "local|dask", "prepare.engine"),
    ):
        line = next(line for line in prepare.splitlines() if f"{option} " in line)
        assert choices in line and f"[default: ({default})]" in line and "<str>" not in line, line
    fetch = run_cli("fetch", "--help", cwd=tmp_path, env=env).stdout
    assert "auto|folder|shards" in fetch and "local|dask" in fetch
    leaderboard = run_cli("leaderboard", "--help", cwd=tmp_path, env=env).stdout
    assert "[default: (compare.sort)]" in leaderboard and "[default: (the common ones present)]" in leaderboard


@pytest.mark.parametrize(
    "args, expected",
    [
        (("prepare", "--aspect", "squash"), "error: --aspect 'squash': expected 'stretch', 'pad' or 'center-crop'"),
        (("prepare", "--color", "sepia"), "error: --color 'sepia': expected 'rgb' or 'grayscale'"),
        (("fetch", "--layout", "tree"), "error: --layout 'tree': expected 'auto', 'folder' or 'shards'"),
        (("prepare", "--bogus"), "error: no such option: --bogus"),
        (("prepare", "--scale", "big"), "error: invalid value for '--scale'"),
        (("frobnicate",), "error: no such command 'frobnicate'"),
        (("predict",), "error: missing argument"),
        (("--show-completion", "csh"), "error: --show-completion 'csh': unsupported shell; name one of bash, zsh"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(tmp_path, args, expected):
    proc = run_cli(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(expected) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""


def test_a_good_choice_reaches_the_stage(tiny_project):
    run_cli("fetch", "--per-class", "4", cwd=tiny_project)
    run_cli("prepare", "--size", "8x10", "--aspect", "pad", "--color", "grayscale", cwd=tiny_project)
    meta = json.loads((tiny_project / "data/prepared/meta.json").read_text())
    assert meta["input_shape"] == [8, 10, 1] and "pad" in json.dumps(meta)


def test_completion_answers_the_shell(tmp_path):
    """What the installed script asks for on <TAB>: commands, options, choices, architectures."""

    def complete(line: str) -> list[str]:
        words = line.split()
        env = {"_PIPELINE_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words))}
        if not line.endswith(" "):
            env["COMP_CWORD"] = str(len(words) - 1)
        return run_cli(cwd=tmp_path, env=env).stdout.split()

    assert complete("pipeline pre") == ["prepare", "predict"]
    assert complete("pipeline prepare --aspect ") == ["stretch", "pad", "center-crop"]
    assert complete("pipeline train --arch lenet") == ["lenet5"]
    assert "--show-completion" in complete("pipeline --")


def process(*args: str, home) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` with `home` as HOME (nothing written to the real one)."""
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT), "SHELL": "/bin/bash"}
    env.pop("_PIPELINE_COMPLETE", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=home, env=env, capture_output=True, text=True, timeout=60
    )


def test_show_and_install_completion(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    bash = process("--show-completion", "bash", home=home)
    assert bash.returncode == 0, bash.stderr
    assert "_pipeline_completion()" in bash.stdout and "complete -o default -F _pipeline_completion pipeline" in (
        bash.stdout
    )
    assert "_PIPELINE_COMPLETE=complete_bash" in bash.stdout and bash.stderr == ""
    zsh = process("--show-completion", "zsh", home=home)  # the shell named, not the one it runs in
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef pipeline")
    assert list(home.iterdir()) == []  # showing writes nothing
    installed = process("--install-completion", "bash", home=home)
    assert installed.returncode == 0, installed.stderr
    script = home / ".bash_completions/pipeline.sh"
    assert f"bash completion installed in {script}" in installed.stdout
    assert script.read_text().strip() == bash.stdout.strip()
    assert f"source '{script}'" in (home / ".bashrc").read_text()
    assert sorted(p.name for p in home.iterdir()) == [".bash_completions", ".bashrc"]


def test_python_m_says_pipeline(tmp_path):
    """`python -m pipeline` is `pipeline` in usage lines, errors and completion scripts."""
    proc = process("prepare", "-h", home=tmp_path)
    assert (
        proc.returncode == 0 and "Usage: pipeline prepare [OPTIONS]" in proc.stdout and "python -m" not in proc.stdout
    )
    wrong = process("prepare", "--bogus", home=tmp_path)
    assert wrong.returncode == 2 and "'pipeline prepare --help'" in wrong.stderr


def test_compare_json(mixed):  # noqa: F811
    (mixed / "runs/cnn").mkdir(parents=True)
    (mixed / "runs/cnn/run.json").write_text(json.dumps({"train_seconds": 49.2, "peak_rss_mb": 1418.3}))
    proc = run_cli("compare", "--json", cwd=mixed, env={"COLUMNS": "60"})
    document = json.loads(proc.stdout)  # stdout is the JSON and nothing else, however narrow the terminal
    assert document["sort"] == "best_threshold_accuracy" and document["mixed_data"] is True
    rows = document["rows"]
    assert [row["arch"] for row in rows] == ["lenet5", "convnet", "cnn"]  # best first, as the table
    assert [row["ranked_by"] for row in rows] == ["accuracy", "accuracy", "best_threshold_accuracy"]
    assert [row["data"] for row in rows] == [
        f"mnist {MNIST['fingerprint'][:8]}",
        f"mnist {MNIST['fingerprint'][:8]}",
        f"synthetic {SYNTHETIC['fingerprint'][:8]}",
    ]
    cnn = rows[2]
    assert cnn["metrics"] == json.loads((mixed / "metrics/cnn.json").read_text())  # as written: 10890113, not 1.09e7
    assert isinstance(cnn["metrics"]["params"], int) and "top5_accuracy" not in cnn["metrics"]
    assert cnn["run"] == {"train_seconds": 49.2, "peak_rss_mb": 1418.3} and "run" not in rows[0]
    assert rows[0]["metrics"]["per_class_accuracy.9"] == 0.981  # flattened, as the table's columns
    assert "warning: these rows come from 2 different datasets" in proc.stderr  # warnings stay on stderr
    by_mse = json.loads(run_cli("-S", "compare.sort=mse", "compare", "--json", cwd=mixed).stdout)
    assert by_mse["sort"] == "mse" and all(row["ranked_by"] == "mse" for row in by_mse["rows"])
    both = run_cli("compare", "--json", "--md", cwd=mixed, check=False)
    assert both.returncode == 2 and both.stderr.strip() == "error: --md and --json: choose one output format"
