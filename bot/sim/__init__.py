"""Simulation: phantom data, the local Bot API emulator and virtual volunteers."""
