"""Frame sources: tilt schedulers, the simulated microscope, replay and acquisition adapters."""
