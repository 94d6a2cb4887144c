"""Repository-level promises: the README's commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- section:quickstart -->")[1].split("<!-- /section:quickstart -->")[0]
    return [c.strip() for c in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quickstart_has_exactly_two_commands():
    commands = _quickstart_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "monai.bundle run training" in commands[0] and "run evaluating" in commands[0]
    assert commands[1].endswith("pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quickstart_commands()[1] in ci
    # CPU torch must be installed before the project, or pip pulls a multi-GB CUDA build.
    torch_line = next(i for i, line in enumerate(ci) if "torch==" in line)
    assert torch_line < ci.index(_quickstart_commands()[1])
