import operator

import pytest
import torch
from torch import nn

from quantlib.editors.patterns import OpTreeFinder, Role, SequenceFinder, SequencePattern, module_role
from quantlib.graphs import trace

CONV_BN_RELU = SequencePattern([module_role("conv", nn.Conv2d), module_role("bn", nn.BatchNorm2d, optional=True),
                                module_role("relu", nn.ReLU, optional=True)])


def _matches(model):
    gm = trace(model)
    return [{role: node.target for role, node in p.roles.items()} for p in SequenceFinder(CONV_BN_RELU).find(gm)]


def test_optional_roles_match_when_present_and_are_skipped_when_absent():
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.ReLU(),   # conv bn relu
                          nn.Conv2d(1, 1, 1), nn.ReLU(),                       # conv relu
                          nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1),               # conv bn
                          nn.Conv2d(1, 1, 1), nn.Tanh())                       # conv alone
    assert _matches(model) == [{"conv": "0", "bn": "1", "relu": "2"}, {"conv": "3", "relu": "4"},
                               {"conv": "5", "bn": "6"}, {"conv": "7"}]


def test_pattern_follows_any_user_of_a_branching_node():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.tanh, self.bn = nn.Conv2d(1, 1, 1), nn.Tanh(), nn.BatchNorm2d(1)

        def forward(self, x):
            y = self.conv(x)
            return self.tanh(y) + self.bn(y)

    assert _matches(Branch()) == [{"conv": "conv", "bn": "bn"}]


def test_pattern_rejects_optional_first_role_and_duplicate_names():
    with pytest.raises(ValueError, match="first role must not be optional"):
        SequencePattern([module_role("a", nn.ReLU, optional=True)])
    with pytest.raises(ValueError, match="Role names must be unique"):
        SequencePattern([module_role("a", nn.ReLU), module_role("a", nn.ReLU)])


def test_matching_cost_is_linear_in_graph_size():
    """Count predicate evaluations: no backtracking, no Cartesian products of candidates."""
    counts = {"n": 0}

    def counted(types):
        def matches(node, modules):
            counts["n"] += 1
            return node.op == "call_module" and isinstance(modules[node.target], types)
        return matches

    pattern = SequencePattern([Role("conv", counted(nn.Conv2d)), Role("bn", counted(nn.BatchNorm2d), True),
                               Role("relu", counted(nn.ReLU), True)])
    evaluations = []
    for blocks in (10, 100):
        counts["n"] = 0
        layers = [m for _ in range(blocks) for m in (nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.ReLU())]
        gm = trace(nn.Sequential(*layers))
        assert len(SequenceFinder(pattern).find(gm)) == blocks
        evaluations.append(counts["n"])
    nodes = [3 * 10 + 2, 3 * 100 + 2]
    assert evaluations[1] / nodes[1] == pytest.approx(evaluations[0] / nodes[0], rel=0.05)
    assert evaluations[1] <= 3 * nodes[1]


def _is_add(node, modules):
    return node.op == "call_function" and node.target is operator.add


def _trees(fn):
    gm = trace(fn)
    return [([n.name for n in t.nodes], [i.name for i in t.inputs]) for t in OpTreeFinder(_is_add).find(gm)]


def test_op_tree_collects_chain_of_adds_with_inputs_in_order():
    class Chain(nn.Module):
        def forward(self, a, b, c, d):
            return (a + b) + (c + d)

    assert _trees(Chain()) == [(["add_2", "add", "add_1"], ["a", "b", "c", "d"])]


def test_op_tree_splits_where_an_inner_add_has_other_users():
    class Shared(nn.Module):
        def forward(self, a, b, c):
            s = a + b
            return s + c, torch.relu(s)

    assert _trees(Shared()) == [(["add"], ["a", "b"]), (["add_1"], ["add", "c"])]


def test_op_tree_keeps_a_value_added_to_itself_as_two_inputs():
    class Twice(nn.Module):
        def forward(self, a, b):
            s = a + b
            return s + s

    assert _trees(Twice()) == [(["add"], ["a", "b"]), (["add_1"], ["add", "add"])]


def test_deep_add_chain_is_one_tree_without_recursion_limit():
    class Deep(nn.Module):
        def forward(self, x):
            y = x
            for _ in range(3000):
                y = y + x
            return y

    [(ops, inputs)] = _trees(Deep())
    assert len(ops) == 3000 and len(inputs) == 3001


def test_module_call_finder_matches_types_exactly_or_by_subclass_and_filters():
    from quantlib.editors.patterns import ModuleCallFinder

    class MyConv(nn.Conv2d):
        pass

    gm = trace(nn.Sequential(nn.Conv2d(1, 1, 1), MyConv(1, 1, 1), nn.ReLU()), leaf_modules=[MyConv])
    names = lambda finder: [p["c"].name for p in finder.find(gm)]  # noqa: E731
    assert names(ModuleCallFinder((nn.Conv2d,), "c")) == ["_0", "_1"]
    assert names(ModuleCallFinder((nn.Conv2d,), "c", exact=True)) == ["_0"]
    assert names(ModuleCallFinder((nn.Conv2d,), "c", where=lambda n: n.args[0].op == "placeholder")) == ["_0"]
