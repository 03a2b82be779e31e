"""The README keeps its promises: two set-up commands first, every setting documented, CI runs the test command."""

from __future__ import annotations

import re
from pathlib import Path

from solaris_tokens.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["bash scripts/serve", "bash scripts/test"]
    assert readme.index("```bash") < readme.index("\n## ")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"SOLARIS_{name.upper()}" not in readme]
    assert missing == []
