"""strobe hostdriver layer."""
