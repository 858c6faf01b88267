"""Muon (Keller Jordan, 2024) for conv kernels, with SGD for everything else, in one optimizer.

Muon replaces each weight matrix's update by the nearest (semi-)orthogonal matrix to its momentum,
found with a few Newton-Schulz iterations, so that every direction of a layer moves at the same
rate. A conv kernel (out, in, k, k) is treated as the matrix (out, in*k*k).

Why our own rather than torch.optim.Muon: that one takes 2-D parameters only, so the conv kernels
would have to be stored as matrices (which changes every checkpoint), and it needs torch 2.9 or
newer while the suite runs on older ones. One optimizer holding both kinds of group also lets one
OneCycleLR schedule drive both rates, and one GradScaler step both.
"""

import torch

# The quintic iteration's coefficients (Jordan, 2024): they push every singular value of the
# normalized matrix towards 1 quickly, to within about [0.7, 1.2] in 5 steps, which is all the
# update needs, rather than converging exactly.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix, steps=5):
    """The Newton-Schulz approximation of U V^T for matrix = U S V^T, in float32."""
    a, b, c = NEWTON_SCHULZ
    x = matrix.float()
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.T  # iterate on the wide side: X X^T is the smaller product
    x = x / (x.norm() + 1e-7)  # singular values at most 1, where the iteration converges
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


class MuonSGD(torch.optim.Optimizer):
    """Param groups with `muon=True` take Muon's orthogonalized Nesterov step; the rest take SGD with
    Nesterov momentum and (coupled) weight decay, as torch.optim.SGD does.

    A Muon step for a kernel W with gradient G: buffer B = momentum*B + (1 - momentum)*G; update
    U = orthogonalize((1 - momentum)*G + momentum*B) scaled by max(1, rows/cols)^0.5, so that a tall
    matrix's update is not smaller per entry; W = W*(1 - lr*weight_decay) - lr*U (decoupled decay)."""

    def __init__(self, groups, lr, momentum, weight_decay=0.0, ns_steps=5):
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, muon=False,
                                      ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "buffer" not in state:
                    state["buffer"] = torch.zeros_like(p)
                buffer = state["buffer"]
                if group["muon"]:
                    buffer.lerp_(p.grad, 1 - momentum)
                    nesterov = p.grad.lerp(buffer, momentum)
                    rows, cols = p.shape[0], p[0].numel()
                    update = orthogonalize(nesterov.reshape(rows, cols), group["ns_steps"])
                    update = update.view_as(p).to(p.dtype) * max(1.0, rows / cols) ** 0.5
                    p.mul_(1 - lr * decay).add_(update, alpha=-lr)
                else:
                    grad = p.grad.add(p, alpha=decay) if decay else p.grad
                    buffer.mul_(momentum).add_(grad)
                    p.add_(grad.add(buffer, alpha=momentum), alpha=-lr)
        return loss
