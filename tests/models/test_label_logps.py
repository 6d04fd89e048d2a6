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
    """Counts the storages of a given shape that ops other than aliases (detach, view) create."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape, self.seen = shape, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and tuple(t.shape) == self.shape and func.overloadpacket.__name__ not in ("detach", "alias", "view"):
                self.seen.add(t.untyped_storage().data_ptr())
        return out


def test_label_logps_backward_allocates_one_vocabulary_sized_tensor() -> None:
    torch.manual_seed(0)
    shape = (64, 1000)
    labels = torch.randint(0, shape[1], (shape[0],))
    counts = {}
    for name, fn in (("fused", label_logps), ("autograd", _reference)):
        logits = torch.randn(shape, requires_grad=True)
        out = fn(logits * 1.0, labels)  # (T, V) logits made by an op, as the LM head's are
        with _NewLargeTensors(shape) as mode:
            out.sum().backward()
        counts[name] = len(mode.seen - {logits.grad.untyped_storage().data_ptr()})
    assert counts == {"fused": 1, "autograd": 3}  # autograd: zeros, their scatter, log_softmax's backward
