"""strobe training layer."""
