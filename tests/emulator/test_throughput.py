"""Throughput sanity: many full-size ingestion requests complete correctly (no timing asserts)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from target_databox.emulator import Emulator, EmulatorConfig
from target_databox.emulator.app import Request

from .conftest import API_KEY, Api

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


def _python_calls(action: Callable[[], object]) -> int:
    """Python and C function calls made by ``action`` (in this thread)."""
    calls = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls


def test_work_per_request_does_not_grow_with_the_dataset() -> None:
    """The 1,000th ingestion into a dataset costs what the 10th did (counted, not timed):
    SQL statements, SQLite VM steps and Python calls of an ingestion into a keyed and a keyless
    dataset, a list poll and an ingestion detail."""
    emu = Emulator(EmulatorConfig(api_key=API_KEY, id_seed=3))
    headers = {"x-api-key": API_KEY, "content-type": "application/json"}

    def call(method: str, path: str, body: object = None, query: str = "") -> dict[str, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        response = emu.app.handle(Request(method, path, query, headers, data))
        assert response.status == 200, response.body
        answer: dict[str, Any] = json.loads(response.body)
        return answer

    source = call("POST", "/v1/data-sources", {"title": "s"})["id"]
    keyed, keyless = (
        call("POST", "/v1/datasets", {"title": t, "dataSourceId": source, "primaryKeys": k})["id"]
        for t, k in (("keyed", ["id"]), ("keyless", None))
    )

    def records(n: int) -> list[dict[str, Any]]:
        # 15 new keys and 5 keys of the request 5 before (overwrites).
        ids = [n * 15 + i for i in range(15)] + [max(n - 5, 0) * 15 + i for i in range(5)]
        return [
            {"id": i, "name": f"n{i}", "at": f"2024-01-{1 + i % 28:02d}T10:00:00Z", "price": 1.5}
            for i in ids
        ]

    def one_round(n: int) -> None:
        ingestion = call("POST", f"/v1/datasets/{keyed}/data", {"records": records(n)})
        call("POST", f"/v1/datasets/{keyless}/data", {"records": records(n)})
        call("GET", f"/v1/datasets/{keyed}/ingestions", query="page=1&pageSize=10")
        call("GET", f"/v1/datasets/{keyed}/ingestions/{ingestion['ingestionId']}")

    def measured(n: int) -> tuple[int, int, int]:
        """Rounds n and n + 1 (the SQLite counters' callbacks would count as Python calls)."""
        with emu.store.counting() as work:
            one_round(n)
        return work.statements, work.vm_steps, _python_calls(lambda: one_round(n + 1))

    try:
        for n in range(9):
            one_round(n)
        early = measured(9)
        for n in range(11, 998):
            one_round(n)
        late = measured(998)
        assert len(emu.rows(keyless)) == 1000 * 20
        assert len(emu.rows(keyed)) == 1000 * 15
    finally:
        emu.close()
    for what, before, after in zip(
        ("statements", "VM steps", "Python calls"), early, late, strict=True
    ):
        assert after <= before * 1.05 + 20, (
            f"{what}: {before} at the 10th request, {after} at the 1,000th"
        )
