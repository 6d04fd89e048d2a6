"""Each loss written again from its paper, element by element in Python floats (float64), independent of preftune."""

from __future__ import annotations

import math


def log_sigmoid(z: float) -> float:
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def sigmoid(z: float) -> float:
    return math.exp(log_sigmoid(z))


def pair_loss(name: str, pc: float, pr: float, rc: float, rr: float, lc: float, lr: float, beta: float, p: dict) -> float:
    """The per-example loss of one pair; p holds the variant's parameters."""
    rw, rl = pc - rc, pr - rr              # log-ratios
    h = rw - rl
    if name == "dpo":
        return -log_sigmoid(beta * h)
    if name == "cdpo":
        e = p["label_smoothing"]
        return -(1 - e) * log_sigmoid(beta * h) - e * log_sigmoid(-beta * h)
    if name == "robust":
        e = p["label_smoothing"]
        return ((1 - e) * -log_sigmoid(beta * h) - e * -log_sigmoid(-beta * h)) / (1 - 2 * e)
    if name == "ipo":
        hh = rw / lc - rl / lr if p["normalize"] == "tokens" else h
        return (hh - 1 / (2 * beta)) ** 2
    if name == "hinge":
        return max(0.0, 1 - beta * h)
    if name == "sigmoid_norm":
        return -log_sigmoid(beta * (rw / lc - rl / lr))
    if name == "f_dpo":
        kind, a = p["f_divergence_type"], p["f_alpha_divergence_coef"]

        def f(r: float) -> float:  # f'(t) at t = πθ/πref = e^r (Wang et al. 2024, table 1)
            if kind == "forward_kl":
                return 1 - 1 / math.exp(r)
            if kind == "js_divergence":
                t = math.exp(r)
                return math.log(2 * t / (1 + t))
            if kind == "alpha_divergence" and a != 1:
                return (math.exp(r) ** (a - 1) - 1) / (a - 1)
            return r  # reverse KL: log t
        return -log_sigmoid(beta * (f(rw) - f(rl)))
    if name == "dpop":
        return -log_sigmoid(beta * (h - p["lambda_"] * max(0.0, rc - pc)))
    if name == "rpo":
        return -log_sigmoid(beta * h) + p["alpha"] * (-pc / lc)
    if name == "sft":
        return -pc / lc
    if name == "bco_pair":
        return -log_sigmoid(beta * rw) - log_sigmoid(-beta * rl)
    if name == "exo_pair":
        e = p["label_smoothing"]
        q = sigmoid(beta * h)
        return q * (log_sigmoid(beta * h) - math.log(1 - e)) + (1 - q) * (log_sigmoid(-beta * h) - math.log(e))
    if name == "nca_pair":
        return -log_sigmoid(beta * rw) - 0.5 * log_sigmoid(-beta * rw) - 0.5 * log_sigmoid(-beta * rl)
    if name == "sppo_hard":
        return (rw - 1 / (2 * beta)) ** 2 + (rl + 1 / (2 * beta)) ** 2
    if name == "apo_zero":
        return (1 - sigmoid(beta * rw)) + sigmoid(beta * rl)
    if name == "apo_down":
        return sigmoid(beta * rw) + (1 - sigmoid(beta * h))
    if name == "discopop":
        z = beta * h
        m = sigmoid(z / p["tau"])
        return -log_sigmoid(z) * (1 - m) + math.exp(-z) * m
    if name == "simpo":
        z = beta * (pc / lc - pr / lr) - p["gamma_beta_ratio"] * beta
        e = p["label_smoothing"]
        return -(1 - e) * log_sigmoid(z) - e * log_sigmoid(-z)
    if name == "orpo":
        aw, al = pc / lc, pr / lr
        odds = (aw - math.log(1 - math.exp(aw))) - (al - math.log(1 - math.exp(al)))
        return -aw - p["lambda_"] * log_sigmoid(odds)
    raise KeyError(name)


def sorted_pair_losses(name: str, pc, pr, rc, rr, beta: float, p: dict) -> list[float]:
    """AOT variants: the logistic loss over sorted batch quantities (Melnyk et al. 2024)."""
    e = p["label_smoothing"]
    if name == "aot":
        a = sorted(x - y for x, y in zip(pc, pr))
        b = sorted(x - y for x, y in zip(rc, rr))
    else:
        a = sorted(x - y for x, y in zip(pc, rc))
        b = sorted(x - y for x, y in zip(pr, rr))
    return [-(1 - e) * log_sigmoid(beta * (u - v)) - e * log_sigmoid(-beta * (u - v)) for u, v in zip(a, b)]


def rewards(name: str, pc: float, pr: float, rc: float, rr: float, lc: float, lr: float, beta: float) -> tuple[float, float]:
    if name == "simpo":
        return beta * pc / lc, beta * pr / lr
    if name == "orpo":
        return beta * pc / lc, beta * pr / lr
    return beta * (pc - rc), beta * (pr - rr)


def kto(pl, rl, labels, pkl, rkl, beta, wd, wu) -> list[float]:
    z0 = max(0.0, sum(a - b for a, b in zip(pkl, rkl)) / len(pkl))
    out = []
    for a, b, y in zip(pl, rl, labels):
        r = a - b
        out.append(wd * (1 - sigmoid(beta * (r - z0))) if y else wu * (1 - sigmoid(beta * (z0 - r))))
    return out
