"""strobe tools layer."""
