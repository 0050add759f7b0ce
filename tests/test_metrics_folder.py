"""``PROMETHEUS_MULTIPROC_DIR`` set and missing: every process makes it (a janitor, a mailer,
a command run in a container where no server started); one that cannot be made is one line.
tests/test_compose_stack.py runs the stack's commands in such containers."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import _base_environment, assert_fails_with_one_line, run_cli


def test_a_command_makes_the_metrics_folder_it_is_given(tmp_path: Path) -> None:
    folder = tmp_path / "container-tmp" / "prometheus"
    env = {**_base_environment(tmp_path / "instance"), "PROMETHEUS_MULTIPROC_DIR": str(folder)}

    result = run_cli("--help", env=env)

    assert result.returncode == 0, result.stderr
    assert folder.is_dir()


def test_a_metrics_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    folder = in_the_way / "prometheus"
    env = {**_base_environment(tmp_path / "instance"), "PROMETHEUS_MULTIPROC_DIR": str(folder)}

    line = assert_fails_with_one_line(run_cli("--help", env=env))

    assert line.startswith(f"Error: PROMETHEUS_MULTIPROC_DIR={folder} is not a folder")
    assert "Not a directory" in line
