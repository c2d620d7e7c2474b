from torch import nn

from quantlib.graphs import to_networkx, trace
from quantlib.modules import Add


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.add = Add()

    def forward(self, x):
        return self.add(self.conv(x), x)


def test_networkx_view_has_every_node_and_data_edge():
    g = to_networkx(trace(Residual()))
    assert set(g.nodes) == {"x", "conv", "add", "output"}
    assert set(g.edges) == {("x", "conv"), ("x", "add"), ("conv", "add"), ("add", "output")}
    assert g.nodes["conv"] == {"op": "call_module", "target": "conv", "module_type": "Conv2d"}
    assert g.nodes["x"]["op"] == "placeholder"
