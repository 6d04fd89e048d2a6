"""Preference data: read, validate, normalize, tokenize and batch."""
