"""Measuring a model: held-out preference accuracy and margins, generation with a KL estimate, judges and win rates."""
