"""Shared fixtures: an in-process Databox emulator and a target config pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from target_databox.emulator import Emulator, EmulatorConfig
from tests.support import API_KEY
from tests.tls_support import self_signed_cert

#: Rate limits lifted for fast runs against the emulator.
FAST = {"max_requests_per_second": 2000, "max_requests_per_hour": 10_000_000}


def serving(config: EmulatorConfig) -> Iterator[Emulator]:
    """An emulator serving for the duration of a fixture; its database closed after."""
    emu = Emulator(config)
    emu.start()
    try:
        yield emu
    finally:
        emu.close()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    yield from serving(EmulatorConfig(api_key=API_KEY, port=0))


@pytest.fixture
def config(emulator: Emulator) -> dict[str, Any]:
    """Settings for a fast run against the emulator (rate limits lifted)."""
    return {"api_key": API_KEY, "api_url": emulator.url, **FAST}


# HTTPS: the emulator with a self-signed certificate, and settings that trust it.


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path)


@pytest.fixture
def https_emulator(cert: tuple[Path, Path]) -> Iterator[Emulator]:
    yield from serving(
        EmulatorConfig(api_key=API_KEY, port=0, tls_cert=str(cert[0]), tls_key=str(cert[1]))
    )


@pytest.fixture
def https_config(https_emulator: Emulator, cert: tuple[Path, Path]) -> dict[str, Any]:
    return {"api_key": API_KEY, "api_url": https_emulator.url, "ca_bundle": str(cert[0]), **FAST}
