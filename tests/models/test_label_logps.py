"""The LM head's label log-probs (`label_logps`): log_softmax + gather's values and gradients, with one (T, V)
tensor made in the backward pass instead of three."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from preftune.models.logprobs import label_logps


def _reference(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def test_label_logps_values_and_gradients() -> None:
    torch.manual_seed(0)
    logits = torch.randn(7, 11, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (7,))
    torch.testing.assert_close(label_logps(logits, labels), _reference(logits, labels))
    assert torch.autograd.gradcheck(lambda x: label_logps(x, labels), (logits,))
    weights = torch.randn(7, dtype=torch.float64)
    got, = torch.autograd.grad((label_logps(logits, labels) * weights).sum(), logits)
    want, = torch.autograd.grad((_reference(logits, labels) * weights).sum(), logits)
    torch.testing.assert_close(got, want)
    with torch.no_grad():
        torch.testing.assert_close(label_logps(logits, labels), _reference(logits, labels))


class _NewLargeTensors(TorchDispatchMode):
    """Counts the ops that make a new tensor of a given shape: out-of-place ops other than aliases (detach, view).
    It counts ops, not addresses, so an allocator that hands a freed block to the next tensor counts the same."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape, self.made = shape, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if not name.endswith("_") and name not in ("detach", "alias", "view"):
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and tuple(t.shape) == self.shape:
                    self.made.append(name)
        return out


def test_label_logps_backward_allocates_one_vocabulary_sized_tensor() -> None:
    torch.manual_seed(0)
    shape = (64, 1000)
    labels = torch.randint(0, shape[1], (shape[0],))
    made = {}
    for name, fn in (("fused", label_logps), ("autograd", _reference)):
        logits = torch.randn(shape, requires_grad=True) * 1.0  # (T, V) logits made by an op, as the LM head's are
        out = fn(logits, labels)
        with _NewLargeTensors(shape) as mode:
            (grad,) = torch.autograd.grad(out.sum(), logits)  # the gradient itself is one of the tensors made
        made[name] = mode.made
    assert len(made["fused"]) == 1, made  # softmax, turned in place into the gradient
    assert len(made["autograd"]) == 3, made  # zeros, their scatter, log_softmax's backward
