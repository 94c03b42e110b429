"""A local emulator of the Databox Ingestion API v1 for tests, benchmarks and offline runs.

It implements the documented API (reference Part A) and this project's assumptions (Part B)
and knows nothing about Singer or the target. In-process use::

    with Emulator(EmulatorConfig(api_key="test-key", processing_polls=1)) as emu:
        ...  # point a client at emu.url
        emu.faults.add("drop_after", method="POST", path=r"/data$")
        emu.process_pending()
        rows = emu.rows(emu.find_dataset("orders")["id"])

As a process: ``target-databox-emulator --api-key KEY --port 0`` prints
``Databox emulator listening on http://127.0.0.1:PORT``; ``GET /`` shows what landed and
``/_emulator/{state,requests,config,faults,process,reset}`` inspect and steer it without a key.
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
