"""The README's Python example runs as written (in a temporary directory)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from user_data import image_folder

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


def test_readme_user_path_runs_as_written(tmp_path):
    """The 'Your own model, data and task' block, run by bash with the installed console script,
    on a generated image folder of 3 classes: it trains, writes the ONNX file and costs it."""
    block = re.search(r"<!-- user-path -->\n```bash\n(.*?)```\n<!-- /user-path -->", README.read_text(), re.S)
    assert block
    image_folder(tmp_path / "images", per_class=30)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1", COLUMNS="200")
    r = subprocess.run(["bash", "-e", "-c", block.group(1)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [json.loads(ln) for ln in (tmp_path / "runs/mine/metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in rows] == list(range(1, 11))
    assert rows[-1]["test_acc"] > 0.6  # 3 classes: chance is 1/3
    assert any(m["phase"].startswith("grow") for m in rows) and any(m["phase"].endswith("prune") for m in rows)
    assert (tmp_path / "runs/mine/model.onnx").stat().st_size > 0
    assert "ONNX Runtime" in r.stdout and "latency" in r.stdout.lower()
    assert list((tmp_path / "runs/mine-tb").glob("events.out.tfevents.*"))
    assert "Traceback" not in r.stderr
