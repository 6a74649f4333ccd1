"""The README's Python example runs as written (in a temporary directory)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "small.pt").exists()


def test_readme_commands_are_what_ci_runs():
    block = re.search(r"<!-- ci:setup -->\n```bash\n(.*?)```\n<!-- /ci:setup -->", README.read_text(), re.S)
    readme_lines = block.group(1).strip().splitlines()
    ci_lines = (README.parent / ".ci" / "run").read_text().splitlines()
    assert len(readme_lines) == 2 and "pytest" in readme_lines[1]
    assert ci_lines[-len(readme_lines):] == readme_lines
