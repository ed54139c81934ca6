"""The README's commands are the ones the project stands behind: CI runs its test command word
for word, and its quick-start tool exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", body, flags=re.S)


def test_ci_runs_the_readme_test_command_exactly():
    (command,) = _commands("Tests")
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command.strip() in ci_lines


def test_quick_start_installs_the_cpu_torch_first_and_uses_files_that_exist():
    (command,) = _commands("Quick start (fresh machine, Python >= 3.10)")
    assert command.startswith("pip install torch==2.13.0 && ")
    for script in re.findall(r"python (tools/\S+\.py)", command):
        assert (ROOT / script).is_file(), script
