"""Errors and warnings: ``NetmemError`` carries the kernel's errno and names the failed check;
``NetmemWarning`` is a kernel ``WARN_ON`` (or a misuse the kernel cannot see) met by the model."""
from netmem._core import NetmemError, NetmemWarning

__all__ = ["NetmemError", "NetmemWarning"]
