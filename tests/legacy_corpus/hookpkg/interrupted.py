"""Run as `python -m hookpkg.interrupted`."""
raise KeyboardInterrupt
