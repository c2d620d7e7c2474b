"""delete_unused_submodules deletes exactly what torch.fx's delete_all_unused_submodules deletes."""

import copy

import torch

from quantlib.editors.canonicalise import canonicalise
from quantlib.graphs.submodules import delete_unused_submodules
from quantlib.zoo import build


def test_the_same_submodules_go_as_with_torch_fx():
    gm = canonicalise(build("resnet20", seed=0), torch.randn(1, 3, 32, 32))
    erased = [n for n in gm.graph.nodes if n.op == "call_module" and n.target.startswith("layer2.1")
              and "relu" in n.target]  # a block's activations: their modules go, their block stays
    assert len(erased) == 2
    for node in erased:
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
    theirs = copy.deepcopy(gm)
    theirs.delete_all_unused_submodules()
    delete_unused_submodules(gm)
    ours = [name for name, _ in gm.named_modules()]
    assert ours == [name for name, _ in theirs.named_modules()]
    assert "layer2.1.conv1" in ours and not any(name.startswith("layer2.1") and "relu" in name for name in ours)
    assert len(ours) > 40
