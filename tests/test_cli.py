"""The `crosslink` command as an operator meets it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from crosslink.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_lint_config_accepts_the_example():
    result = run("lint-config", str(EXAMPLE))
    assert result.exit_code == 0 and "OK" in result.output


def test_lint_config_rejects_a_broken_status_map_naming_line_and_fix(tmp_path):
    broken = EXAMPLE.read_text(encoding="utf-8").replace(
        "partner_to_client: {1: 11, 2: 12, 3: 13, 4: 14}", "partner_to_client: {1: 11, 2: 12, 3: 13, 4: 99}")
    assert broken != EXAMPLE.read_text(encoding="utf-8")
    path = tmp_path / "links.yaml"
    path.write_text(broken, encoding="utf-8")
    result = run("lint-config", str(path))
    assert result.exit_code == 1
    line = next(n for n, text in enumerate(broken.splitlines(), 1) if "4: 99" in text)
    assert f"{path}:{line}:" in result.output and "99" in result.output and "fix:" in result.output


def test_lint_config_names_an_unknown_key(tmp_path):
    path = tmp_path / "links.yaml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8").replace("on_forbidden: path", "on_forbiden: path"),
                    encoding="utf-8")
    result = run("lint-config", str(path))
    assert result.exit_code == 1 and "on_forbiden" in result.output and "on_forbidden" in result.output


def test_lint_config_on_a_missing_file():
    result = run("lint-config", "/nonexistent/links.yaml")
    assert result.exit_code != 0 and "no such file" in result.output


def test_every_subcommand_has_help():
    for command in main.commands:
        result = run(command, "--help")
        assert result.exit_code == 0, (command, result.output)
