import torch
import torch.nn.functional as F
from torch import nn

from quantlib.editors.base import Rewriter
from quantlib.editors.canonicalise import FUNCTIONALISE_INPLACE
from quantlib.graphs import trace


class OverwritesThenReads(nn.Module):
    """``x`` is overwritten in place and read again afterwards: the read must see the new values."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        x = x * 1.0
        before = x * 2
        x.relu_()
        after = x + 1
        y = self.act(after)
        z = F.relu(after, inplace=True)
        return before, after, y, z


def test_inplace_ops_become_out_of_place_with_identical_values():
    model = OverwritesThenReads()
    gm = Rewriter(FUNCTIONALISE_INPLACE)(trace(model))
    x = torch.randn(4, 5)
    for a, b in zip(model(x.clone()), gm(x.clone()), strict=False):
        assert torch.equal(a, b)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_method"]
    assert "relu" in targets and "relu_" not in targets
    assert gm.act.inplace is False
    relu_call = next(n for n in gm.graph.nodes if n.target is F.relu)
    assert relu_call.kwargs["inplace"] is False


def test_reader_after_inplace_op_is_redirected_and_reader_before_is_not():
    gm = Rewriter(FUNCTIONALISE_INPLACE)(trace(OverwritesThenReads()))
    nodes = {n.name: n for n in gm.graph.nodes}
    assert nodes["mul_1"].args[0] is nodes["mul"]       # `before` reads the value before relu_
    assert nodes["add"].args[0] is nodes["relu_"]        # `after` reads relu's result (node keeps its name)
    x = torch.tensor([[-1.0, 2.0]])
    before, after, _, _ = gm(x)
    assert before.tolist() == [[-2.0, 4.0]] and after.tolist() == [[1.0, 3.0]]


def test_inplace_write_into_a_view_is_refused():
    import pytest

    from quantlib.errors import EditorError

    class ViewWrite(nn.Module):
        def forward(self, x):
            y = x * 1.0
            y[:, :2].relu_()
            return y

    with pytest.raises(EditorError, match=r"In-place op 'relu_' \(relu_\) writes into 'getitem', a view"):
        Rewriter(FUNCTIONALISE_INPLACE)(trace(ViewWrite()))


def test_inplace_method_without_out_of_place_twin_is_refused():
    import pytest

    from quantlib.errors import EditorError

    class Fill(nn.Module):
        def forward(self, x):
            y = x * 1.0
            y.fill_(0.0)
            return y + x

    with pytest.raises(EditorError, match="In-place method 'fill_' of node 'fill_' has no out-of-place form"):
        Rewriter(FUNCTIONALISE_INPLACE)(trace(Fill()))
