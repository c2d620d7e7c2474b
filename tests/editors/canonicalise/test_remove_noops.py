import torch
import torch.nn.functional as F
from torch import nn

from quantlib.editors.base import Rewriter
from quantlib.editors.canonicalise import REMOVE_NO_OPS
from quantlib.graphs import trace


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.5)
        self.drop2d = nn.Dropout1d(0.1)
        self.id = nn.Identity()

    def forward(self, x):
        x = self.id(self.drop(self.lin(x)))
        x = F.dropout(x, 0.3, training=self.training)
        return self.drop2d(x.unsqueeze(-1)).squeeze(-1)


def test_dropout_and_identity_are_removed_even_in_training_mode():
    model = Noisy().train()
    gm = Rewriter(REMOVE_NO_OPS)(trace(model))
    assert [n.target for n in gm.graph.nodes if n.op != "placeholder"] == ["lin", "unsqueeze", "squeeze", "output"]
    assert {name for name, _ in gm.named_children()} == {"lin"}
    x = torch.randn(3, 4)
    assert torch.equal(gm(x), model.eval()(x))
