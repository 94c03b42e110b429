"""A local emulator of the Databox Ingestion API v1 for tests, benchmarks and offline runs.

It implements the documented API (reference Part A) and this project's assumptions (Part B)
and knows nothing about Singer or the target.
"""

from .app import RequestRecord
from .config import FAULT_KINDS, Account, EmulatorConfig
from .emulator import Emulator
from .faults import Fault, FaultAction, FaultPlan

__all__ = [
    "FAULT_KINDS",
    "Account",
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "FaultAction",
    "FaultPlan",
    "RequestRecord",
]
