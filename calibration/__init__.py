"""strobe calibration layer."""
