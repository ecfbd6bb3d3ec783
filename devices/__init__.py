"""Talking to target devices: local, SSH, Android phones over adb, simulated NPUs, Arm
Ethos-U via Vela.

Importing the package registers the device kinds implemented so far.
"""

from devices.adb import AdbDevice
from devices.base import (
    Device,
    DeviceError,
    Runtime,
    create_device,
    device_kinds,
    register_device_kind,
)
from devices.known_hosts import HostKey
from devices.local import LocalDevice
from devices.measurement import Fingerprint, Measurement
from devices.npu_sim import NpuSimDevice
from devices.profiles import DeviceProfile, list_profiles, load_profile, open_device
from devices.runner_protocol import RunSettings
from devices.ssh import SshDevice
from devices.vela import VelaDevice

__all__ = [
    "AdbDevice",
    "Device",
    "DeviceError",
    "DeviceProfile",
    "Fingerprint",
    "HostKey",
    "LocalDevice",
    "Measurement",
    "NpuSimDevice",
    "RunSettings",
    "Runtime",
    "SshDevice",
    "VelaDevice",
    "create_device",
    "device_kinds",
    "list_profiles",
    "load_profile",
    "open_device",
    "register_device_kind",
]
