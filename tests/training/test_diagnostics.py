"""Each detector fires on a case built to trigger it and stays quiet on a healthy run."""

from __future__ import annotations

import logging

from preftune.config import DiagnosticsConfig, config_warnings
from preftune.training.diagnostics import (Diagnostics, chosen_likelihood_falling, drift,
                                        flat_margins, length_bias)

BETA = 0.1


def step(chosen_ratio: float, rejected_ratio: float) -> dict[str, float]:
    return {"rewards/chosen": BETA * chosen_ratio, "rewards/rejected": BETA * rejected_ratio,
            "rewards/margins": BETA * (chosen_ratio - rejected_ratio), "logratios/chosen": chosen_ratio, "logratios/rejected": rejected_ratio}


def test_chosen_likelihood_falling_fires_when_both_fall_and_margin_grows() -> None:
    both_down = [step(0, 0), step(-4, -6), step(-12, -20)]
    assert "pushing both responses down" in chosen_likelihood_falling(both_down, 5.0)
    healthy = [step(0, 0), step(1, -3), step(2, -8)]
    assert chosen_likelihood_falling(healthy, 5.0) is None


def test_flat_margins_fires_when_held_out_margins_stop_rising() -> None:
    flat = [{"eval/rewards/margins": m} for m in (0.10, 0.101, 0.099)]
    assert "has not risen over 3" in flat_margins(flat, 3, 0.01)
    rising = [{"eval/rewards/margins": m} for m in (0.0, 0.1, 0.3)]
    assert flat_margins(rising, 3, 0.01) is None


def test_length_bias_fires_when_margins_track_length() -> None:
    diffs = [float(d) for d in range(-20, 21, 2)]
    assert "correlate with the length difference" in length_bias([0.05 * d + 0.01 for d in diffs], diffs, 0.5)
    unrelated = [0.3, -0.1, 0.2, 0.25, -0.05, 0.1, 0.3, -0.1, 0.2, 0.25, -0.05, 0.1, 0.3, -0.1, 0.2, 0.25, -0.05, 0.1, 0.3, -0.1, 0.2]
    assert length_bias(unrelated, [float(i % 2) for i in range(21)], 0.5) is None


def test_drift_fires_on_large_log_ratios_and_config_flags_small_beta_high_lr() -> None:
    assert "drifted 120 nats" in drift([step(-80, -120)], 50.0)
    assert drift([step(-3, -5)], 50.0) is None
    assert config_warnings(0.01, 1e-4) and not config_warnings(0.1, 1e-4) and not config_warnings(0.01, 1e-6)


def test_diagnostics_warn_once_and_report_metrics(caplog) -> None:
    d = Diagnostics(DiagnosticsConfig())
    with caplog.at_level(logging.WARNING, logger="preftune.diagnostics"):
        d.observe_train(1, step(0, 0))
        m2 = d.observe_train(2, step(-10, -20))
        m3 = d.observe_train(3, step(-15, -30))
    assert m2 == {"diagnostics/chosen_likelihood_falling": 1.0} and m3 == m2
    assert caplog.text.count("chosen_likelihood_falling") == 1 and len(d.findings) == 2
    quiet = Diagnostics(DiagnosticsConfig())
    assert all(quiet.observe_train(i, step(i * 0.5, -i)) == {} for i in range(5))


def test_the_detectors_read_log_ratios_not_rewards_over_beta() -> None:
    """SimPO's rewards are β·(average log-prob), not log-ratios: a step whose rewards divided by β look like a falling
    chosen likelihood, but whose log-ratios are healthy, fires nothing."""
    simpo_like = [{"rewards/chosen": 2.0 * -1.0, "rewards/rejected": 2.0 * -2.0, "rewards/margins": 2.0, "logratios/chosen": 0.0},
                  {"rewards/chosen": 2.0 * -30.0, "rewards/rejected": 2.0 * -60.0, "rewards/margins": 60.0, "logratios/chosen": 1.0,
                   "logratios/rejected": -2.0}]
    assert chosen_likelihood_falling(simpo_like, 5.0) is None and drift(simpo_like, 50.0) is None
    no_reference = [{"rewards/chosen": -60.0, "rewards/rejected": -120.0, "rewards/margins": 60.0}] * 2
    assert chosen_likelihood_falling(no_reference, 5.0) is None and drift(no_reference, 50.0) is None


def test_a_reference_free_loss_skips_the_log_ratio_detectors_and_says_why() -> None:
    from preftune.training.diagnostics import not_applicable

    assert not_applicable(True, "dpo") == {}
    skipped = not_applicable(False, "simpo")
    assert set(skipped) == {"chosen_likelihood_falling", "drift"} and all("simpo has no reference model" in w for w in skipped.values())
    d = Diagnostics(DiagnosticsConfig(), skipped)
    assert all(d.observe_train(i, step(-10.0 * i, -20.0 * i)) == {} for i in range(5))  # log-ratios would fire both
    assert d.findings == []


def test_a_simpo_run_reports_the_detectors_it_does_not_watch(tmp_path, tiny_model_dir) -> None:
    import json

    import preftune

    from .helpers import tiny_config

    cfg = tiny_config(tmp_path, tiny_model_dir, "loss.name=simpo", "reference.strategy=none", "train.max_steps=2", "report=true")
    result = preftune.train(cfg, progress=False)
    summary = json.loads((result.output_dir / "summary.json").read_text())
    assert set(summary["diagnostics_not_applicable"]) == {"chosen_likelihood_falling", "drift"}
    page = (result.output_dir / "report.html").read_text()
    assert 'id="not-applicable-drift"' in page and "simpo has no reference model" in page


def test_small_edit_pairs_trigger_chosen_likelihood_falling_on_a_tiny_model(tmp_path, tiny_model_dir) -> None:
    """Pairs that differ only in a final number (the GSM8K failure mode): DPO lowers both likelihoods."""
    from preftune.training.run import train

    from ..conftest import write_jsonl
    from .helpers import tiny_config

    rows = [{"prompt": f"Compute {i} plus {i + 3}.", "chosen": f" Adding them step by step, the result is {2 * i + 3}",
             "rejected": f" Adding them step by step, the result is {2 * i + 4}"} for i in range(32)]
    data = write_jsonl(tmp_path / "edit.jsonl", rows)
    cfg = tiny_config(tmp_path, tiny_model_dir, f"data.train={data}", "train.max_steps=30", "train.learning_rate=2e-2", "train.shuffle=true")
    result = train(cfg, show_progress=False)
    kinds = {f.kind for f in result.findings}
    assert "chosen_likelihood_falling" in kinds
    logged = [m for m in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "diagnostics/chosen_likelihood_falling" in m]
    assert logged
