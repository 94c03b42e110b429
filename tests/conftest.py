"""Shared fixtures: an in-process Databox emulator and a target config pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from target_databox.emulator import Emulator, EmulatorConfig
from tests.support import API_KEY


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator(EmulatorConfig(api_key=API_KEY, port=0))
    emu.start()
    try:
        yield emu
    finally:
        emu.close()


@pytest.fixture
def config(emulator: Emulator) -> dict[str, Any]:
    """Settings for a fast run against the emulator (rate limits lifted)."""
    return {
        "api_key": API_KEY,
        "api_url": emulator.url,
        "max_requests_per_second": 2000,
        "max_requests_per_hour": 10_000_000,
    }
