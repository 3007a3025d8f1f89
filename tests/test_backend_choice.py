"""``auto`` asks the installed libraries for a GPU only where the machine can have one."""

from __future__ import annotations

import pytest

from tl_core import backend
from tl_core.backend import choose_backend, gpu_device_possible


def test_linux_without_a_gpu_device_file_has_no_gpu_to_find() -> None:
    assert not gpu_device_possible("Linux", present=lambda pattern: False)


@pytest.mark.parametrize("found", ["/proc/driver/nvidia/version", "/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd"])
def test_linux_with_nvidia_wsl_or_rocm_devices_may_have_one(found: str) -> None:
    assert gpu_device_possible("Linux", present=lambda pattern: pattern == found)


@pytest.mark.parametrize("system", ["Darwin", "Windows"])
def test_elsewhere_only_the_libraries_can_tell(system: str) -> None:
    assert gpu_device_possible(system, present=lambda pattern: False)


def test_auto_asks_no_library_on_a_machine_without_a_gpu_device(monkeypatch) -> None:
    asked = []
    monkeypatch.delenv(backend.BACKEND_VARIABLE, raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(backend, "installed_backends", lambda: ["tensorflow", "jax", "torch"])
    monkeypatch.setattr(backend, "remembered_gpu_probe", lambda name: asked.append(name) or False)
    monkeypatch.setattr(backend, "gpu_device_possible", lambda: False)
    choice = choose_backend("auto")
    assert (choice.name, asked) == ("tensorflow", [])
    assert "no GPU device" in choice.reason

    monkeypatch.setattr(backend, "gpu_device_possible", lambda: True)  # a GPU may be there: every library is asked
    choice = choose_backend("auto")
    assert (choice.name, asked) == ("tensorflow", ["tensorflow", "jax", "torch"])
    assert "no installed backend" in choice.reason
