"""strobe emulator layer."""
