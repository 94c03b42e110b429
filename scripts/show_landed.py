"""Print the data sources, datasets and rows an emulator holds (used by the quick start)."""

from __future__ import annotations

import sys

import requests


def main(url: str) -> None:
    state = requests.get(f"{url}/_emulator/state", timeout=10).json()
    for source in state.get("dataSources", []):
        print(f"data source {source['id']}: {source['title']!r}")
    for dataset in state.get("datasets", []):
        rows = dataset.get("rows", [])
        print(
            f"dataset {dataset['title']!r} ({dataset['id']}), primary keys "
            f"{dataset.get('primaryKeys')}, {len(rows)} rows"
        )
        columns = dataset.get("columns") or {}
        print("  columns: " + ", ".join(f"{name}:{kind}" for name, kind in columns.items()))
        for row in rows[:20]:
            shown = {k: v for k, v in row.items() if not k.startswith("_sdc")}
            print(f"  {shown}")


if __name__ == "__main__":
    main(sys.argv[1])
