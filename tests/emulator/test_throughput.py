"""Throughput sanity: many full-size ingestion requests complete correctly (no timing asserts)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from target_databox.emulator import Emulator

from .conftest import Api

REQUESTS = 300
BATCH = 100
WORKERS = 4


def test_three_hundred_full_batches(api: Api, emu: Emulator) -> None:
    keyed = api.dataset(["id"], title="keyed")
    keyless = api.dataset(None, title="keyless")
    work: list[tuple[str, bytes]] = []
    for request in range(REQUESTS):
        # Consecutive keyed requests share ids, so half of them overwrite.
        start = (request // 2) * BATCH
        records = [{"id": start + i, "v": request, "price": 1.5} for i in range(BATCH)]
        work.append((keyed if request % 3 else keyless, json.dumps({"records": records}).encode()))

    def send(share: list[tuple[str, bytes]]) -> list[int]:
        client = Api(emu.url)  # one keep-alive connection per worker
        try:
            return [client.post(f"/v1/datasets/{d}/data", data=b).status_code for d, b in share]
        finally:
            client.session.close()

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        statuses = [
            s for part in pool.map(send, [work[i::WORKERS] for i in range(WORKERS)]) for s in part
        ]
    assert statuses == [200] * REQUESTS
    emu.process_pending()
    sent = {keyed: 0, keyless: 0}
    for dataset, _ in work:
        sent[dataset] += BATCH
    keyed_ingestions = emu.ingestions(keyed)
    assert all(i["status"] == "success" for i in keyed_ingestions)
    assert sum(i["appended"] + i["overwritten"] for i in keyed_ingestions) == sent[keyed]
    keyed_rows = emu.rows(keyed)
    assert len(keyed_rows) == len({row["id"] for row in keyed_rows})
    assert len(emu.rows(keyless)) == sent[keyless]
    assert emu.state(rows=0)["pendingIngestions"] == 0
