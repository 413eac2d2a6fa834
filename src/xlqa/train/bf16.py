"""bf16 weights for the forward and backward passes, fp32 master weights for the optimizer (``--bf16-weights``).

Under bf16 autocast the model keeps fp32 weights and every step casts them, and many activations (each
LayerNorm and residual add runs in fp32), between fp32 and bf16: on a 2-core CPU those casts were about a fifth
of an E5-small training step. :class:`Bf16Weights` keeps a bf16 copy of the model and runs the forward and
backward passes on it without autocast, while the model the optimizer, the checkpoints, the guard and the
exported folders see stays in fp32 (the usual fp32 master-weights scheme of mixed-precision training):

1. :meth:`~Bf16Weights.pull` copies the trainable fp32 weights into the bf16 copy before a forward pass;
2. the loss is computed on :attr:`~Bf16Weights.module` and back-propagated there (bf16 gradients);
3. :meth:`~Bf16Weights.push_grads` adds those gradients, in fp32, to the fp32 weights' ``.grad`` (accumulated
   batches sum in fp32), and frees the bf16 ones;
4. clipping and the optimizer step work on the fp32 weights, as without this scheme.

One process only: the bf16 copy is not wrapped by DDP/FSDP/DeepSpeed, so its gradients would not be reduced
across processes (those backends have their own mixed-precision settings). The copy costs the model's size in
bf16 (half its fp32 size); frozen weights are copied only by :meth:`~Bf16Weights.sync` (set-up, resume and the
guard's rollback), the trainable ones at every step.
"""

from __future__ import annotations

import copy

import torch


class Bf16Weights:
    """A bf16 copy of ``model`` to train on, whose gradients flow back to ``model``'s fp32 weights."""

    @classmethod
    def when(cls, model: torch.nn.Module, wanted: bool, precision: str) -> Bf16Weights | None:
        """A copy of ``model`` where ``wanted`` and the step's precision is bf16; None otherwise (fp32 and fp16
        steps run as without ``--bf16-weights``)."""
        return cls(model) if wanted and precision == "bf16" else None

    def __init__(self, model: torch.nn.Module):
        self.master = model
        self.module = copy.deepcopy(model).to(torch.bfloat16)
        pairs = list(zip(model.parameters(), self.module.parameters(), strict=True))
        self.pairs = [(m, c) for m, c in pairs if m.requires_grad]
        self.all_pairs = pairs

    @torch.no_grad()
    def pull(self) -> None:
        """The trainable fp32 weights into the bf16 copy (rounded to nearest)."""
        if self.pairs:
            torch._foreach_copy_([c for _, c in self.pairs], [m for m, _ in self.pairs])

    @torch.no_grad()
    def sync(self) -> None:
        """Every weight and buffer into the bf16 copy (after loading a checkpoint or a guard's snapshot)."""
        for m, c in self.all_pairs:
            c.copy_(m)
        for mb, cb in zip(self.master.buffers(), self.module.buffers(), strict=True):
            cb.copy_(mb)

    @torch.no_grad()
    def push_grads(self) -> None:
        """Add the bf16 copy's gradients to the fp32 weights' ``.grad`` (in fp32) and free them."""
        for m, c in self.pairs:
            if c.grad is None:
                continue
            if m.grad is None:
                m.grad = c.grad.to(torch.float32)
            else:
                m.grad.add_(c.grad)
            c.grad = None

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)
