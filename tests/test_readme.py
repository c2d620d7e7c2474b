"""The README's quickstart runs as written and does what its comments say."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_and_exports_with_zero_mismatches(tmp_path, monkeypatch):
    text = README.read_text()
    quickstart = text[text.index("## Quickstart"):text.index("## The staged recipe")]
    [code] = re.findall(r"```python\n(.*?)```", quickstart, re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README quickstart", "exec"), namespace)
    assert namespace["result"].mismatches == 0
    assert (tmp_path / "out" / "resnet20" / "resnet20_QL_DORY.onnx").exists()
    assert sum(core == "analog" for core in namespace["dm"].cores.values()) == 20
