"""The zoo's ResNet-18, ResNet-50 and MobileNetV2 have torchvision's state-dict layout (keys, order, shapes, parameter
counts), and ``load_torchvision_state_dict`` loads such files key for key, unwrapped, with clear errors.

The expected keys are written out here from torchvision's architecture definitions, not read from the zoo's code.
"""

import pytest
import torch

from quantlib.zoo import load_torchvision_state_dict, mobilenet_v2, mobilenetv2, randomise_batchnorm, resnet18, resnet50

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")  # 5 tensors per BatchNorm


def conv_bn(prefix_conv, prefix_bn):
    return [f"{prefix_conv}.weight", *(f"{prefix_bn}.{b}" for b in BN)]


def torchvision_resnet_keys(bottleneck, layers):
    """torchvision ``resnet.py``: conv1, bn1, layer1..4 of blocks (conv1/bn1, conv2/bn2[, conv3/bn3], downsample.0 /
    .1 on the first block of a stage when the stride or the width changes), fc."""
    keys = conv_bn("conv1", "bn1")
    for i, count in enumerate(layers):
        for j in range(count):
            p = f"layer{i + 1}.{j}"
            for c in (1, 2, 3) if bottleneck else (1, 2):
                keys += conv_bn(f"{p}.conv{c}", f"{p}.bn{c}")
            if j == 0 and (i > 0 or bottleneck):
                keys += conv_bn(f"{p}.downsample.0", f"{p}.downsample.1")
    return keys + ["fc.weight", "fc.bias"]


def torchvision_mobilenet_v2_keys():
    """torchvision ``mobilenetv2.py``: features.0 stem, 17 inverted residuals (t = 1: conv.0 dw ConvNormAct, conv.1
    pw-linear, conv.2 bn; else conv.0 pw ConvNormAct, conv.1 dw ConvNormAct, conv.2 pw-linear, conv.3 bn), features.18
    head ConvNormAct, classifier.1."""
    keys = conv_bn("features.0.0", "features.0.1")
    blocks = [1] + [6] * 16  # stages (t, n): (1, 1), (6, 2), (6, 3), (6, 4), (6, 3), (6, 3), (6, 1)
    for index, t in enumerate(blocks, start=1):
        p = f"features.{index}.conv"
        acts = 1 if t == 1 else 2
        for a in range(acts):
            keys += conv_bn(f"{p}.{a}.0", f"{p}.{a}.1")
        keys += conv_bn(f"{p}.{acts}", f"{p}.{acts + 1}")
    return keys + conv_bn("features.18.0", "features.18.1") + ["classifier.1.weight", "classifier.1.bias"]


# ResNet-18: stem 1 + 5; 8 BasicBlocks of 2 x (1 + 5) = 96; 3 downsamples of 6 = 18; fc 2  -> 122
# ResNet-50: stem 6; 16 Bottlenecks of 3 x 6 = 288; 4 downsamples of 6 = 24; fc 2           -> 320
# MobileNetV2: stem 6; one t=1 block 12; 16 t=6 blocks of 18 = 288; head 6; classifier 2     -> 314
CASES = {
    "resnet18": (resnet18, 122, 11_689_512, torchvision_resnet_keys(False, [2, 2, 2, 2]),
                 {"conv1.weight": [64, 3, 7, 7], "layer1.0.conv1.weight": [64, 64, 3, 3],
                  "layer2.0.downsample.0.weight": [128, 64, 1, 1], "layer4.1.bn2.running_var": [512],
                  "bn1.num_batches_tracked": [], "fc.weight": [1000, 512], "fc.bias": [1000]}),
    "resnet50": (resnet50, 320, 25_557_032, torchvision_resnet_keys(True, [3, 4, 6, 3]),
                 {"layer1.0.conv3.weight": [256, 64, 1, 1], "layer1.0.downsample.0.weight": [256, 64, 1, 1],
                  "layer2.0.conv2.weight": [128, 128, 3, 3], "layer4.2.bn3.weight": [2048],
                  "fc.weight": [1000, 2048]}),
    "mobilenet_v2": (mobilenet_v2, 314, 3_504_872, torchvision_mobilenet_v2_keys(),
                     {"features.0.0.weight": [32, 3, 3, 3], "features.1.conv.0.0.weight": [32, 1, 3, 3],
                      "features.1.conv.1.weight": [16, 32, 1, 1], "features.2.conv.0.0.weight": [96, 16, 1, 1],
                      "features.2.conv.1.0.weight": [96, 1, 3, 3], "features.17.conv.2.weight": [320, 960, 1, 1],
                      "features.18.0.weight": [1280, 320, 1, 1], "classifier.1.weight": [1000, 1280]}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    """Each model built once, with random weights and BatchNorm statistics, in eval mode."""
    factory, count, params, keys, spots = CASES[request.param]
    torch.manual_seed(0)
    return request.param, randomise_batchnorm(factory()).eval(), count, params, keys, spots


def test_state_dict_has_torchvisions_keys_in_order_and_shapes(case):
    _, model, count, _, keys, spots = case
    sd = model.state_dict()
    assert len(keys) == count and len(sd) == count
    assert list(sd) == keys
    assert {k: list(sd[k].shape) for k in spots} == spots


def test_parameter_count_is_torchvisions(case):
    _, model, _, params, _, _ = case
    assert sum(p.numel() for p in model.parameters()) == params


def test_forward_at_a_small_input_gives_1000_logits(case):
    _, model, *_ = case
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def wrapped(sd, wrap):
    """``sd`` as DataParallel saves it (``module.`` prefix) and / or wrapped as a training checkpoint."""
    if wrap in ("module_prefix", "both"):
        sd = {f"module.{k}": v for k, v in sd.items()}
    return {"state_dict": sd, "epoch": 90} if wrap in ("state_dict_wrapper", "both") else sd


def test_round_trip_through_a_prefixed_wrapped_checkpoint_computes_the_same(case):
    name, model, *_ = case
    torch.manual_seed(1)
    fresh = CASES[name][0]()
    assert load_torchvision_state_dict(fresh, wrapped(model.state_dict(), "both")) is fresh
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model(x))


@pytest.mark.parametrize("wrap", ["plain", "module_prefix", "state_dict_wrapper", "both"])
def test_every_wrapping_loads_every_tensor(wrap):
    torch.manual_seed(0)
    source = randomise_batchnorm(resnet18(num_classes=10))
    source.bn1.num_batches_tracked.fill_(7)
    torch.manual_seed(1)
    loaded = load_torchvision_state_dict(resnet18(num_classes=10), wrapped(source.state_dict(), wrap))
    expected = source.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())


def test_an_old_file_without_num_batches_tracked_loads(case):
    name, model, *_ = case
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(sd) < len(model.state_dict())
    loaded = load_torchvision_state_dict(CASES[name][0](), sd).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


def test_a_wrong_shaped_fc_is_a_value_error_naming_the_key_and_the_fitting_factory():
    torch.manual_seed(0)
    model = resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_torchvision_state_dict(model, resnet18(num_classes=10).state_dict())
    message = str(info.value)
    assert "fc.weight [10, 512] in the state dict, [1000, 512] in the model" in message
    assert "fc.bias" in message and "resnet18(num_classes=10)" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded


def test_another_architectures_file_names_missing_and_unexpected_keys_and_what_it_fits():
    with pytest.raises(ValueError) as info:
        load_torchvision_state_dict(resnet18(), {f"module.{k}": v for k, v in mobilenet_v2().state_dict().items()})
    message = str(info.value)
    assert "missing keys (122): conv1.weight, bn1.weight" in message and "more)" in message
    assert "unexpected keys (314): features.0.0.weight" in message
    assert "mobilenet_v2(num_classes=1000, width_mult=1.0)" in message


def test_a_file_of_no_zoo_model_says_so():
    with pytest.raises(ValueError, match="fits none of the zoo's"):
        load_torchvision_state_dict(resnet18(), {"fc.weight": torch.zeros(10, 7), "fc.bias": torch.zeros(10)})
    with pytest.raises(ValueError, match="not tensors"):
        load_torchvision_state_dict(resnet18(), {"state_dict": {"fc.weight": [1, 2]}})


def test_the_cifar_style_zoo_mobilenetv2_is_unchanged_and_shares_the_class():
    torch.manual_seed(0)
    small = mobilenetv2()
    assert type(small) is type(mobilenet_v2())
    assert len(small.state_dict()) == 224 and sum(p.numel() for p in small.parameters()) == 414_538
    assert small.features[0][0].stride == (1, 1) and mobilenet_v2().features[0][0].stride == (2, 2)
    with torch.no_grad():
        assert small.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
