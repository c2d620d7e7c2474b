"""Property: any small conv net goes float -> fake-quant -> pow2 -> exact -> integer -> ONNX -> onnxruntime with 0
mismatching elements at every layer. Hypothesis draws the nets and shrinks any failure to a minimal one."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from torch import nn

from quantlib.backends.onnx import integer_onnx, verify_onnxruntime
from quantlib.true_quantisation import pow2_integer_flow
from quantlib.verification import compare_exact_and_integer, compare_fake_and_exact
from quantlib.zoo import randomise_batchnorm


class Residual(nn.Module):
    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.bn(self.conv(x)))


class RandomNet(nn.Module):
    def __init__(self, body: list[nn.Module], channels: int, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*body)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.body(x)), 1))


LAYER = st.fixed_dictionaries({
    "kind": st.sampled_from(["conv", "depthwise", "residual", "maxpool", "avgpool"]),
    "kernel": st.sampled_from([1, 3, 5, 7]),
    "stride": st.sampled_from([1, 2]),
    "channels": st.sampled_from([2, 4, 8]),
    "bn": st.booleans(),
    "act": st.sampled_from([None, "relu", "relu6"]),
})


@st.composite
def nets_and_inputs(draw, sizes: tuple[int, ...] = (6, 8, 12)):
    in_channels = draw(st.sampled_from([1, 3]))
    size = draw(st.sampled_from(sizes))
    layers = draw(st.lists(LAYER, min_size=1, max_size=4))
    seed = draw(st.integers(0, 2 ** 16))
    classes = draw(st.integers(2, 10))
    return in_channels, size, layers, seed, classes


def build(in_channels: int, size: int, layers: list[dict], classes: int) -> nn.Module:
    """The net ``layers`` describe."""
    channels, body = in_channels, []
    for spec in layers:
        if spec["kind"] in ("maxpool", "avgpool"):
            if size >= 4:
                body.append(nn.MaxPool2d(2) if spec["kind"] == "maxpool" else nn.AvgPool2d(2))
                size //= 2
            continue
        if spec["kind"] == "residual":
            body.append(Residual(channels, max(3, spec["kernel"])))
            continue
        stride = spec["stride"] if size >= 4 else 1
        out = channels if spec["kind"] == "depthwise" else spec["channels"]
        groups = channels if spec["kind"] == "depthwise" else 1
        body.append(nn.Conv2d(channels, out, spec["kernel"], stride, spec["kernel"] // 2, groups=groups,
                              bias=not spec["bn"]))
        if spec["bn"]:
            body.append(nn.BatchNorm2d(out))
        if spec["act"] is not None:
            body.append(nn.ReLU() if spec["act"] == "relu" else nn.ReLU6())
        channels, size = out, (size - 1) // stride + 1
    return RandomNet(body, channels, classes)


def flow_of(case: tuple) -> tuple:
    """The power-of-two integer flow of the drawn net (seeded weights and BatchNorms), and 4 test inputs."""
    in_channels, size, layers, seed, classes = case
    torch.manual_seed(seed)
    net = randomise_batchnorm(build(in_channels, size, layers, classes), seed).eval()
    note(repr(net))
    g = torch.Generator().manual_seed(seed)
    calibration = [torch.randn(8, in_channels, size, size, generator=g)]
    x = torch.randn(4, in_channels, size, size, generator=g)
    return pow2_integer_flow(net, x[:1], calibration), x


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=nets_and_inputs())
def test_random_nets_are_integer_exact_everywhere(case):
    flow, x = flow_of(case)
    exact_vs_int = compare_exact_and_integer(flow.exact, flow.integer, x)
    int_vs_ort = verify_onnxruntime(flow.integer, integer_onnx(flow.integer, x[:1]), x)
    assert [(c.layer, c.mismatches) for c in exact_vs_int if c.mismatches] == []
    assert [(c.layer, c.mismatches) for c in int_vs_ort if c.mismatches] == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=nets_and_inputs())
def test_pow2_fake_quantised_nets_equal_their_exact_twins(case):
    """With biases on their accumulators' grids (quantise_biases), the power-of-two fake-quantised model already
    computes what the exact model computes at every quantiser, average pools over any window included (a 3x3 or 6x6
    global pool floors its exact mean as the integer pool does): the requantisations are derived right."""
    flow, x = flow_of(case)
    fake_vs_exact = compare_fake_and_exact(flow.fake, flow.exact, x)
    assert fake_vs_exact
    assert [(c.layer, c.mismatches) for c in fake_vs_exact if c.mismatches] == []
    with torch.no_grad():
        fake_logits, exact_logits = flow.fake(x).double(), flow.exact(x)
    # the logits are an accumulator, not requantised: float32 holds them exactly below 2^24 LSB, else to its rounding
    assert torch.allclose(fake_logits, exact_logits, rtol=2 ** -23, atol=0)
