"""Devices: what a latency-measuring target *is* (local runtimes, Android over ADB, a farm)."""

from __future__ import annotations

from devices.base import DEVICES, Device, device_schemes, get_device, register_device

__all__ = ["DEVICES", "Device", "device_schemes", "get_device", "register_device"]
