"""quantlib.ptq.adam takes the same steps as torch.optim.Adam with the same settings."""

import torch

from quantlib.ptq.adam import Adam


def test_the_steps_equal_torch_adams():
    g = torch.Generator().manual_seed(0)
    ours = torch.randn(5, 3, generator=g)
    theirs = torch.nn.Parameter(ours.clone())
    ours.requires_grad_()
    mine, reference = Adam([ours], lr=0.05), torch.optim.Adam([theirs], lr=0.05)
    for _ in range(30):
        grad = torch.randn(5, 3, generator=g)
        mine.step([grad])
        theirs.grad = grad.clone()
        reference.step()
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-6)
    start = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert mine.t == 30 and (ours.detach() - start).abs().max() > 0.1
