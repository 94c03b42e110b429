"""A file database keeps data sources, datasets, columns, rows and ingestions across restarts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from target_databox.emulator import Emulator, EmulatorConfig

from .conftest import Api


def test_state_survives_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "emulator.sqlite")
    with Emulator(EmulatorConfig(api_key="k", db_path=db)) as first:
        api = Api(first.url, "k")
        dataset = api.dataset(["id"])
        done = api.ingest(dataset, [{"id": 1, "price": 9.99}, {"id": 2, "price": 1}])
        api.get("/v1/accounts")  # applies the first ingestion
        first.config.processing_polls = 5
        pending = api.ingest(dataset, [{"id": 1, "price": 10.5}])
    first.close()

    second = Emulator(EmulatorConfig(api_key="k", db_path=db))
    try:
        second.start()
        api = Api(second.url, "k")
        assert [d["id"] for d in second.datasets()] == [dataset]
        assert second.columns(dataset) == {"id": "number", "price": "number"}
        # What was still processing is due after a restart and applies in order.
        assert second.rows(dataset) == [
            {"id": 1, "price": Decimal("10.5")},
            {"id": 2, "price": 1},
        ]
        assert [i["id"] for i in second.ingestions(dataset)] == [done, pending]
        assert api.detail(dataset, pending)["ingestionStatus"] == "success"
        source = second.data_sources()[0]["id"]
        assert api.get(f"/v1/data-sources/{source}/datasets").json()["datasets"][0]["id"] == dataset
        # New ids continue after the stored ones.
        assert api.data_source("Another") == source + 1
    finally:
        second.close()


def test_seeded_ids_are_deterministic_and_never_collide_on_restart(tmp_path: Path) -> None:
    def dataset_ids(db: str) -> list[str]:
        with Emulator(EmulatorConfig(api_key="k", db_path=db, id_seed=7)) as emu:
            api = Api(emu.url, "k")
            api.dataset()
            return [d["id"] for d in emu.datasets()]

    assert dataset_ids(":memory:") == dataset_ids(":memory:")
    db = str(tmp_path / "seeded.sqlite")
    dataset_ids(db)
    both = dataset_ids(db)
    assert len(both) == len(set(both)) == 2
