"""The README's examples run as written (in order, in one namespace, in a scratch folder)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 6
    ns = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), ns)
