"""The report in a real browser (headless Chromium): no console errors, every chart drawn, the explorer equals compute_loss."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch

from preftune.losses import NAMES, compute_loss, kto_loss, loss_params

FIELDS = ("pc", "pr", "rc", "rr", "lc", "lr")


def open_report(browser: Any, run_dir: Path) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((run_dir / "report.html").resolve().as_uri())
    page.wait_for_selector("body[data-ready=true]", timeout=15000)
    return page, errors


def python_values(name: str, v: dict[str, float], beta: float, length_normalize: bool = False, **params: Any) -> dict[str, float]:
    """compute_loss on one pair in float64, with the gradients of the loss on the policy log-probs; for KTO, kto_loss on
    the chosen response as a desirable and the rejected one as an undesirable example against z₀ = v["z"], averaged."""
    t = {k: torch.tensor([v[k]], dtype=torch.float64, requires_grad=k in ("pc", "pr")) for k in FIELDS}
    if name == "kto":
        policy, ref = torch.cat([t["pc"], t["pr"]]), torch.cat([t["rc"], t["rr"]])
        kto = kto_loss(policy, ref, torch.tensor([True, False]), policy, ref, beta=beta, kl=torch.tensor(v.get("z", 0.0), dtype=torch.float64),
                       **loss_params("kto", {}))
        loss, rewards = kto.losses.mean(), kto.rewards
    else:
        out = compute_loss(name, policy_chosen_logps=t["pc"], policy_rejected_logps=t["pr"], reference_chosen_logps=t["rc"],
                           reference_rejected_logps=t["rr"], chosen_lengths=t["lc"], rejected_lengths=t["lr"], beta=beta,
                           length_normalize=length_normalize, **params)
        loss, rewards = out.losses.sum(), torch.cat([out.chosen_rewards, out.rejected_rewards])
    gc, gr = torch.autograd.grad(loss, [t["pc"], t["pr"]], allow_unused=True)  # sft does not use rejected
    return {"loss": loss.item(), "chosen_reward": rewards[0].item(), "rejected_reward": rewards[1].item(),
            "grad_chosen": 0.0 if gc is None else gc.item(), "grad_rejected": 0.0 if gr is None else gr.item()}


def close(a: float, b: float, rel: float, abs_: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def test_page_draws_without_errors_and_screenshot(browser: Any, tiny_run: Path) -> None:
    page, errors = open_report(browser, tiny_run)
    charts = page.eval_on_selector_all("#charts figure", "fs => fs.map(f => ({id: f.id, paths: [...f.querySelectorAll('path.series')]"
                                       ".map(p => p.getAttribute('d').split('L').length)}))")
    assert len(charts) == 8, charts  # every panel has data in this run
    for chart in charts:
        assert chart["paths"] and all(n >= 2 for n in chart["paths"]), chart
    rows = page.eval_on_selector_all("#loss-table tbody tr", "rs => rs.length")
    assert rows == len(NAMES)
    shot = tiny_run / "report-screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
    assert errors == []
    page.close()


def test_slider_moves_loss_to_pythons_value(browser: Any, tiny_run: Path) -> None:
    page, errors = open_report(browser, tiny_run)
    before = float(page.get_attribute("#loss-dpo", "data-value"))
    settings = {"pc": "-20", "pr": "-60", "rc": "-30", "rr": "-45", "beta": "0.25", "lc": "12", "lr": "30", "z": "3.5"}
    for key, value in settings.items():
        page.fill(f"#in-{key}", value)
    after = float(page.get_attribute("#loss-dpo", "data-value"))
    assert after != before
    v = {k: float(settings[k]) for k in (*FIELDS, "z")}
    for name in NAMES:
        want = python_values(name, v, 0.25)
        for key, expected in want.items():
            shown = float(page.get_attribute(f"#{key}-{name}", "data-value"))
            tol = (1e-5, 1e-7) if key.startswith("grad") else (1e-12, 1e-12)  # gradients by central differences in the page
            assert close(shown, expected, *tol), (name, key, shown, expected)
    assert page.text_content("#x-sigma") and close(float(page.get_attribute("#x-sigma", "data-value")), 1 / (1 + math.exp(-0.25 * 25)), 1e-12, 0)
    page.check("#in-length_normalize")
    for name in ("dpo", "simpo", "ipo", "orpo", "kto"):
        shown = float(page.get_attribute(f"#loss-{name}", "data-value"))
        assert close(shown, python_values(name, v, 0.25, length_normalize=True)["loss"], 1e-12, 1e-12), name
    assert errors == []
    page.close()


def test_every_loss_matches_python_on_random_pairs(browser: Any, tiny_run: Path) -> None:
    page, errors = open_report(browser, tiny_run)
    rng = random.Random(0)
    specs = page.evaluate("() => JSON.parse(document.getElementById('run-data').textContent).explorer.losses")
    assert sorted(s["name"] for s in specs) == sorted(NAMES)
    tried = 0
    for spec in specs:
        for _ in range(20):
            v = {"pc": -rng.uniform(0.5, 250), "pr": -rng.uniform(0.5, 250), "rc": -rng.uniform(0.5, 250), "rr": -rng.uniform(0.5, 250),
                 "lc": float(rng.randint(1, 300)), "lr": float(rng.randint(1, 300)), "z": rng.uniform(0, 10)}
            beta = rng.choice([0.01, 0.1, 0.5, 2.0])
            got = page.evaluate("([spec, v, b]) => preftuneLosses.compute(spec, v, b)", [spec, v, beta])
            want = python_values(spec["name"], v, beta)
            assert close(got["loss"], want["loss"], 1e-9, 1e-12), (spec["name"], v, beta, got, want)
            assert close(got["chosen_reward"], want["chosen_reward"], 1e-12, 1e-12)
            tried += 1
    assert tried == 20 * len(NAMES)
    f_dpo = next(s for s in specs if s["name"] == "f_dpo")
    for divergence in ("forward_kl", "js_divergence", "alpha_divergence"):
        params = {"f_divergence_type": divergence, "f_alpha_divergence_coef": 0.3}
        for _ in range(10):
            v = {"pc": -rng.uniform(20, 40), "pr": -rng.uniform(20, 40), "rc": -rng.uniform(20, 40), "rr": -rng.uniform(20, 40), "lc": 9.0, "lr": 5.0}
            got = page.evaluate("([spec, v, b]) => preftuneLosses.compute(spec, v, b)", [{**f_dpo, "params": params}, v, 0.1])
            assert close(got["loss"], python_values("f_dpo", v, 0.1, **params)["loss"], 1e-9, 1e-12), (divergence, v)
    assert errors == []
    page.close()
