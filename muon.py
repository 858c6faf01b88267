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
import torch.nn.functional as F

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


def orthogonalize_together(matrices, steps=5):
    """orthogonalize() of all `matrices` in the launches of one: each turned to its wide side and zero-padded to the
    largest shape. The zeros stay zero (X X^T has zero rows and columns for them, and the Frobenius norm ignores them),
    so in exact arithmetic each result is orthogonalize()'s; in float32 they differ by rounding (tests/test_muon.py)."""
    a, b, c = NEWTON_SCHULZ
    wide = [m if m.shape[0] <= m.shape[1] else m.T for m in matrices]
    rows, cols = max(m.shape[0] for m in wide), max(m.shape[1] for m in wide)
    x = torch.stack([F.pad(m, (0, cols - m.shape[1], 0, rows - m.shape[0])) for m in wide]).float()
    x = x / (torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return [x[k, :w.shape[0], :w.shape[1]] if m is w else x[k, :w.shape[0], :w.shape[1]].T
            for k, (m, w) in enumerate(zip(matrices, wide))]


class MuonSGD(torch.optim.Optimizer):
    """Param groups with `muon=True` take Muon's orthogonalized Nesterov step; the rest take SGD with
    Nesterov momentum and (coupled) weight decay, as torch.optim.SGD does.

    A Muon step for a kernel W with gradient G: buffer B = momentum*B + (1 - momentum)*G; update
    U = orthogonalize((1 - momentum)*G + momentum*B) scaled by max(1, rows/cols)^0.5, so that a tall
    matrix's update is not smaller per entry; W = W*(1 - lr*weight_decay) - lr*U (decoupled decay).

    On `batched` (default: on CUDA) and the GradScaler's hand-off (`_step_supports_amp_scaling`): docs/speed.md."""

    _step_supports_amp_scaling = True

    def __init__(self, groups, lr, momentum, weight_decay=0.0, ns_steps=5, batched=None):
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, muon=False,
                                      ns_steps=ns_steps))
        self.batched = batched

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)  # set by GradScaler
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if "buffer" not in self.state[p]:
                    self.state[p]["buffer"] = torch.zeros_like(p)
            batched = self.batched if self.batched is not None else params[0].is_cuda
            if batched:
                self._group_together(group, params, scale, found_inf)
            elif found_inf is None or not found_inf.item():  # the per-kernel path reads the flag
                self._group_by_kernel(group, params, scale)
        return loss

    def _group_by_kernel(self, group, params, scale):
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        for p in params:
            buffer, grad = self.state[p]["buffer"], p.grad if scale is None else p.grad / scale
            if group["muon"]:
                buffer.lerp_(grad, 1 - momentum)
                nesterov = grad.lerp(buffer, momentum)
                rows, cols = p.shape[0], p[0].numel()
                update = orthogonalize(nesterov.reshape(rows, cols), group["ns_steps"])
                update = update.view_as(p).to(p.dtype) * max(1.0, rows / cols) ** 0.5
                p.mul_(1 - lr * decay).add_(update, alpha=-lr)
            else:
                grad = grad.add(p, alpha=decay) if decay else grad
                buffer.mul_(momentum).add_(grad)
                p.add_(grad.add(buffer, alpha=momentum), alpha=-lr)

    def _group_together(self, group, params, scale, found_inf):
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        buffers, grads = [self.state[p]["buffer"] for p in params], [p.grad for p in params]
        if scale is not None:
            grads = torch._foreach_div(grads, scale)
        if found_inf is not None:  # skipped on the device: no gradient, no rate, the buffers kept
            skip = found_inf > 0
            lr = lr * (1 - found_inf)
            if group["muon"]:  # lerp towards itself keeps a buffer
                grads = [torch.where(skip, b, g) for b, g in zip(buffers, grads)]
            else:  # momentum 1 and no gradient keep a buffer
                grads, momentum = [torch.where(skip, 0.0, g) for g in grads], torch.where(skip, 1.0, momentum)
        if group["muon"]:
            torch._foreach_lerp_(buffers, grads, 1 - momentum)
            nesterov = torch._foreach_lerp(grads, buffers, momentum)
            matrices = [n.reshape(len(n), -1) for n in nesterov]
            together = orthogonalize_together(matrices, group["ns_steps"])
            updates = [u.reshape(p.shape) if u.dtype == p.dtype else u.reshape(p.shape).to(p.dtype)
                       for u, p in zip(together, params)]
            torch._foreach_mul_(updates, [max(1.0, len(m) / m.shape[1]) ** 0.5 for m in matrices])
            if decay:
                torch._foreach_mul_(params, 1 - lr * decay)
        else:
            if decay:
                grads = torch._foreach_add(grads, params, alpha=decay)
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads)
            updates = torch._foreach_add(grads, torch._foreach_mul(buffers, momentum))
        torch._foreach_mul_(updates, lr)
        torch._foreach_sub_(params, updates)
