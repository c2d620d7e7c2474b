"""Shape queries become constants of the example input's shape, except the batch dimension."""

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.editors.canonicalise import canonicalise
from quantlib.modules.average_pool import AveragePool2d


class ShapeReader(nn.Module):
    def forward(self, x):
        y = F.avg_pool2d(x, x.size()[3]) + F.avg_pool2d(x, x.shape[2:]) * x.size(1) + x.shape[-1]
        return y.view(y.size(0), -1)


def test_shapes_fold_to_the_example_inputs_but_the_batch_stays_free():
    model, x = ShapeReader(), torch.randn(2, 3, 8, 8)
    gm = canonicalise(model, x)
    assert [n for n in gm.graph.nodes if n.target == "size" or n.target is getattr] == []
    pools = [m for m in gm.modules() if isinstance(m, AveragePool2d)]
    assert [p.kernel_size for p in pools] == [(8, 8), (8, 8)]
    assert [n.args[1] for n in gm.graph.nodes if n.op == "call_function" and n.target.__name__ == "mul"] == [3]
    wide = torch.randn(5, 3, 8, 8)  # another batch size: the flattening view still follows it
    torch.testing.assert_close(gm(wide), model(wide), rtol=1e-6, atol=1e-6)


def test_without_an_example_input_nothing_is_folded():
    gm = canonicalise(ShapeReader())
    assert sum(n.op == "call_method" and n.target == "size" for n in gm.graph.nodes) >= 2
