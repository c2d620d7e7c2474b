"""padding="same" / "valid" become numbers where they are symmetric; the model computes the same."""

import pytest
import torch
from torch import nn

from quantlib.editors.base import Rewriter
from quantlib.editors.canonicalise import EXPLICIT_PADDING
from quantlib.graphs import trace


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_worded_padding_becomes_numbers_and_the_model_is_unchanged():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.Conv2d(8, 8, 3, padding="same", dilation=2),
                          nn.Conv2d(8, 8, 5, padding="valid"), nn.Conv2d(8, 8, 2, padding="same"))
    x = torch.randn(2, 3, 12, 12)
    gm = Rewriter(EXPLICIT_PADDING)(trace(model))
    assert [gm.get_submodule(str(i)).padding for i in range(4)] == [(1, 1), (2, 2), (0, 0), "same"]
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    assert model[0].padding == "same"  # the caller's model is untouched
