"""One module per calibrated parameter; each has `calibrate(board, targets, base=...)` for
standalone use and a Routine class the full pipeline (calibration.pipeline) runs in ORDER:
cadc (CADC offsets), tau_syn, leak, tau_mem, reset, threshold, synapse (input strength),
refractory. Shared helpers live in base.py."""
