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


def test_the_ptq_snippet_runs_and_its_deployed_model_is_exact():
    import torch

    from quantlib.quantised_layers import quantised_layers
    from quantlib.zoo import digits_cnn
    text = README.read_text()
    section = text[text.index("## Post-training quantisation"):text.index("## Joint mixed-precision training")]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(32, 1, 8, 8, generator=g)]
    x = torch.randn(16, 1, 8, 8, generator=g)
    namespace = {"model": digits_cnn(), "calibration_batches": batches, "batches": batches, "x": x}
    exec(compile(code.replace("iters=1000", "iters=20"), "README ptq", "exec"), namespace)
    flow = namespace["flow"]
    with torch.no_grad():
        assert torch.equal(flow.exact(x), flow.integer(x))
        assert torch.equal(flow.fake(x).argmax(1), flow.integer(x).argmax(1))
    assert namespace["q"] is flow.fake
    bits = {layer.name: layer.module.spec.qrange.bits for layer in quantised_layers(namespace["mixed"])}
    assert bits == {"features.0": 8, "features.3": 2, "features.7": 2, "classifier": 8}


def test_the_mixed_precision_snippet_runs():

    from quantlib.data import digits_loaders
    from quantlib.zoo import digits_cnn
    text = README.read_text()
    section = text[text.index("## Joint mixed-precision training"):text.index("## Troubleshooting")]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    train, test = digits_loaders(seed=0)
    namespace = {"float_model": digits_cnn(), "train_loader": train, "test_loader": test}
    exec(compile(code.replace("epochs=20", "epochs=1"), "README mixed precision", "exec"), namespace)
    summary = eval("mp.random_bitwidths(model, test_loader, [2, 4, 8], num_bitwidths=3).summary()", namespace)
    assert 10 < summary["accuracy_mean"] <= 100 and summary["accuracy_min"] <= summary["accuracy_max"]
