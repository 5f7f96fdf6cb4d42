"""Shapes of what crosses module boundaries: inbound messages, predictions, dead letters, tables."""
