"""Scoring preference pairs, below training: the reference strategies and the one rule that picks a reference, a
batch's loss and per-pair values, the loop that scores a split without gradients, and the metric accumulator.
Training, evaluation, the reference precompute and iterate all score through here."""
