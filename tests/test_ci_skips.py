"""CI's skip rule: only tests marked `cuda` may skip, whatever words a skip reason or a path contains."""

from __future__ import annotations

from types import SimpleNamespace

from .conftest import ci_disallowed_skips


def report(nodeid: str, reason: str) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, longrepr=("file.py", 1, f"Skipped: {reason}"))


def test_a_skip_mentioning_cuda_or_gpu_fails_ci_unless_the_test_is_marked_cuda() -> None:
    marked = report("tests/models/test_x.py::test_on_gpu", "needs a CUDA GPU")
    unmarked_reason = report("tests/models/test_y.py::test_z", "no CUDA here, and no GPU")
    unmarked_path = report("tests/GPU/test_gpu_path.py::test_plain", "Chromium is not installed")
    bad = ci_disallowed_skips([marked, unmarked_reason, unmarked_path], {marked.nodeid})
    assert bad == [unmarked_reason, unmarked_path]


def test_the_gpu_only_tests_carry_the_cuda_marker() -> None:
    from .models.test_layouts import test_flex_attention_gives_the_sdpa_gradients_on_gpu as flex
    from .models.test_static_shapes import test_cuda_graph_steps_equal_eager_steps_on_gpu as graphs
    from .training.test_metrics import test_a_micro_batch_never_waits_on_the_gpu as sync

    for test in (flex, graphs, sync):
        assert "cuda" in {m.name for m in getattr(test, "pytestmark", [])}, test.__name__
