"""Talking to target devices: local, SSH, simulated NPUs."""
