"""Every zoo model canonicalises to the canonical form and computes what the float model computed."""

import copy
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantlib.editors.canonicalise import canonicalise
from quantlib.editors.canonicalise.functional_to_modular import RULES
from quantlib.editors.canonicalise.remove_noops import NOOP_FUNCTIONS, NOOP_MODULES
from quantlib.zoo import ZOO, build

FUNCTIONAL_TARGETS = {f for rule in RULES for f in rule.functions} | set(NOOP_FUNCTIONS)
ACTIVATION_METHODS = {"relu", "relu_", "flatten", "add", "add_", "dropout"}


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo_case(request):
    name = request.param
    model = build(name, seed=1)
    x = torch.randn(2, *ZOO[name].input_shape, generator=torch.Generator().manual_seed(2))
    reference = copy.deepcopy(model.state_dict())
    return name, model, x, reference, canonicalise(model, x)


def test_canonical_model_computes_what_the_float_model_computes(zoo_case):
    name, model, x, _, gm = zoo_case
    with torch.no_grad():
        expected, got = model(x), gm(x)
    assert expected.abs().max() > 0
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max(), name


def test_canonical_form_has_no_batchnorm_functional_op_reused_module_or_dropout(zoo_case):
    name, _, _, _, gm = zoo_case
    modules = dict(gm.named_modules())
    calls = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert not [n for n in calls if isinstance(modules[n.target], nn.modules.batchnorm._BatchNorm)]
    assert not [n for n in calls if isinstance(modules[n.target], NOOP_MODULES)]
    assert not [m for m in gm.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))]
    assert not [n.name for n in gm.graph.nodes if n.op == "call_function" and n.target in FUNCTIONAL_TARGETS]
    assert not [n.name for n in gm.graph.nodes if n.op == "call_method" and n.target in ACTIVATION_METHODS]
    assert max(Counter(n.target for n in calls).values()) == 1
    assert not [n.name for n in gm.graph.nodes if n.op in ("call_function", "call_method")], name


def test_canonicalisation_leaves_the_users_model_untouched(zoo_case):
    _, model, _, reference, _ = zoo_case
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_functional_net_keeps_its_semantics_in_the_details():
    gm = canonicalise(build("functional_net"), torch.randn(1, 3, 32, 32))
    types = Counter(type(m).__name__ for n, m in gm.named_modules() if n and "." not in n)
    assert types["Add"] == 3 and types["ReLU"] == 8 and types["ReLU6"] == 2
    assert types["Conv2d"] == 5 and types["Flatten"] == 1
    assert F.relu not in {n.target for n in gm.graph.nodes}
