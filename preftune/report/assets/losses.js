// The loss registry of preftune.losses, in JavaScript, for the report's explorer.
// Each function mirrors its Python twin (same formulas, same defaults); tests/report checks they agree.
"use strict";
(function (global) {
  const logsig = (x) => (x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x)));
  const sig = (x) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
  const smoothed = (z, eps) => -(1 - eps) * logsig(z) - eps * logsig(-z);
  const logOdds = (avg) => avg - Math.log(-Math.expm1(avg));

  // f′(πθ/πref) of f-DPO's divergence, from the log-ratio r
  const fScore = (r, p) => {
    const a = p.f_alpha_divergence_coef;
    if (p.f_divergence_type === "forward_kl") return 1 - Math.exp(-r);
    if (p.f_divergence_type === "js_divergence") return Math.LN2 + logsig(r);
    if (p.f_divergence_type === "alpha_divergence" && Math.abs(a - 1) >= 1e-6) return Math.expm1(Math.min((a - 1) * r, 80)) / (a - 1);
    return r;
  };

  // x: {pc, pr, rc, rr, lc, lr} after the reference and length handling of compute_loss; each returns the loss.
  const clr = (x) => x.pc - x.rc;
  const rlr = (x) => x.pr - x.rr;
  const margin = (x) => clr(x) - rlr(x);
  const FNS = {
    dpo: (x, b) => -logsig(b * margin(x)),
    cdpo: (x, b, p) => smoothed(b * margin(x), p.label_smoothing),
    robust: (x, b, p) => {
      const e = p.label_smoothing, z = b * margin(x);
      if (!(e >= 0 && e < 0.5)) return NaN;
      return (-(1 - e) * logsig(z) + e * logsig(-z)) / (1 - 2 * e);
    },
    ipo: (x, b, p) => {
      const h = p.normalize === "sum" ? margin(x) : clr(x) / x.lc - rlr(x) / x.lr;
      return (h - 1 / (2 * b)) ** 2;
    },
    hinge: (x, b) => Math.max(0, 1 - b * margin(x)),
    sigmoid_norm: (x, b) => -logsig(b * (clr(x) / x.lc - rlr(x) / x.lr)),
    f_dpo: (x, b, p) => -logsig(b * (fScore(clr(x), p) - fScore(rlr(x), p))),
    dpop: (x, b, p) => -logsig(b * (margin(x) - p.lambda_ * Math.max(0, x.rc - x.pc))),
    rpo: (x, b, p) => -logsig(b * margin(x)) + p.alpha * (-x.pc / x.lc),
    sft: (x) => -x.pc / x.lc,
    bco_pair: (x, b) => -logsig(b * clr(x)) - logsig(-b * rlr(x)),
    exo_pair: (x, b, p) => {
      const z = b * margin(x), e = p.label_smoothing;
      return sig(z) * (logsig(z) - Math.log1p(-e)) + sig(-z) * (logsig(-z) - Math.log(e));
    },
    nca_pair: (x, b) => {
      const rw = b * clr(x), rl = b * rlr(x);
      return -logsig(rw) - 0.5 * logsig(-rw) - 0.5 * logsig(-rl);
    },
    sppo_hard: (x, b) => (clr(x) - 0.5 / b) ** 2 + (rlr(x) + 0.5 / b) ** 2,
    apo_zero: (x, b) => 1 - sig(b * clr(x)) + sig(b * rlr(x)),
    apo_down: (x, b) => sig(b * clr(x)) + 1 - sig(b * margin(x)),
    aot: (x, b, p) => smoothed(b * ((x.pc - x.pr) - (x.rc - x.rr)), p.label_smoothing),
    aot_pair: (x, b, p) => smoothed(b * (clr(x) - rlr(x)), p.label_smoothing),
    discopop: (x, b, p) => {
      const z = b * margin(x), mix = sig(z / p.tau);
      return -logsig(z) * (1 - mix) + Math.exp(-z) * mix;
    },
    simpo: (x, b, p) => smoothed(b * x.pc / x.lc - b * x.pr / x.lr - p.gamma_beta_ratio * b, p.label_smoothing),
    // KTO on one pair: the chosen response a desirable example, the rejected one undesirable, z0 = x.z; the mean of the two
    kto: (x, b, p) => 0.5 * (p.desirable_weight * (1 - sig(b * (clr(x) - x.z))) + p.undesirable_weight * (1 - sig(b * (x.z - rlr(x))))),
    orpo: (x, b, p) => {
      const w = x.pc / x.lc, l = x.pr / x.lr;
      return -w - p.lambda_ * logsig(logOdds(w) - logOdds(l));
    },
  };
  const REWARDS = {
    simpo: (x, b) => [b * x.pc / x.lc, b * x.pr / x.lr],
    orpo: (x, b) => [b * x.pc / x.lc, b * x.pr / x.lr],
  };

  // Inputs as compute_loss prepares them: zeros for a missing reference, lengths ≥ 1, optional length normalization.
  function prepare(spec, v) {
    let { pc, pr, rc, rr } = v;
    const lc = Math.max(1, v.lc), lr = Math.max(1, v.lr);
    if (!spec.uses_reference || v.reference_free) { rc = 0; rr = 0; }
    if (v.length_normalize && !spec.unpaired) { pc /= lc; pr /= lr; rc /= lc; rr /= lr; }
    return { pc, pr, rc, rr, lc, lr, z: v.z || 0 };
  }

  function lossOnly(spec, v, beta) {
    const x = prepare(spec, v);
    return FNS[spec.name](x, beta, spec.params);
  }

  // {loss, chosen_reward, rejected_reward, grad_chosen, grad_rejected} for one pair; β null takes the variant's default.
  function compute(spec, v, beta) {
    const b = beta == null ? spec.default_beta : beta;
    const x = prepare(spec, v);
    const loss = FNS[spec.name](x, b, spec.params);
    const rewards = REWARDS[spec.name] ? REWARDS[spec.name](x, b) : [b * clr(x), b * rlr(x)];
    const d = 1e-4;
    const at = (dc, dr) => lossOnly(spec, { ...v, pc: v.pc + dc, pr: v.pr + dr }, b);
    return {
      loss, chosen_reward: rewards[0], rejected_reward: rewards[1],
      grad_chosen: (at(d, 0) - at(-d, 0)) / (2 * d), grad_rejected: (at(0, d) - at(0, -d)) / (2 * d),
    };
  }

  global.preftuneLosses = { compute, names: Object.keys(FNS), logsig, sig };
})(window);
