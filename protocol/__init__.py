"""strobe protocol layer."""
