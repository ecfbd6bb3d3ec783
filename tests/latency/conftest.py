"""The SSH test device (a real sshd on 127.0.0.1 and the "device" Python) for the latency tests."""

from tests.devices.conftest import device_python, sshd

__all__ = ["device_python", "sshd"]
