"""GAN losses as small pure functions (after rosinality's ``train.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["g_nonsaturating_loss", "d_logistic_loss", "d_r1_loss"]


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: ``softplus(-D(G(z)))``, averaged."""
    return F.softplus(-fake_logits).mean()


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic discriminator loss: ``softplus(D(G(z))) + softplus(-D(x))``, averaged."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def d_r1_loss(real_logits: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """R1 penalty: mean over the batch of ``||d D(x) / d x||^2`` (``real_img`` must require grad)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)
    return grad.float().square().sum(dim=[1, 2, 3]).mean()
