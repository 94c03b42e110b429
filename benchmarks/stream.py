"""A deterministic, realistic Singer stream for the benchmark (seeded; same bytes every run)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import msgspec

STREAM = "orders"
STATE_EVERY = 10_000
#: Bump when the generator changes, so cached files are regenerated.
VERSION = 1

SCHEMA = {
    "type": "SCHEMA",
    "stream": STREAM,
    "key_properties": ["id"],
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": ["string", "null"], "format": "date-time"},
            "amount": {"type": "number"},
            "quantity": {"type": ["integer", "null"]},
            "paid": {"type": "boolean"},
            "status": {"type": "string"},
            "note": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "customer": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "email": {"type": ["string", "null"]},
                    "address": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string"},
                            "country": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}

_NAMES = ["Ana Novak", "Jürgen Müller", "Zoë Brontë", "李雷", "Олег Петров", "Siobhán Ó Sé",
          "José Núñez", "Åsa Öberg", "محمد علي", "Nguyễn Văn An"]
_CITIES = [("Ljubljana", "SI"), ("München", "DE"), ("São Paulo", "BR"), ("東京", "JP"),
           ("Kraków", "PL"), ("Reykjavík", "IS"), ("New York", "US"), ("Zürich", "CH")]
_STATUSES = ["new", "paid", "shipped", "delivered", "refunded"]
_TAGS = ["gift", "priority", "b2b", "promo", "returning", "überweisung", "café"]
_NOTES = [None, None, "Leave at the door ☺", "Rush order", "Call before delivery — thanks!"]
_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def _iso(seconds: int) -> str:
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generate(path: Path, records: int, seed: int = 42) -> None:
    """Write SCHEMA, `records` RECORDs and a STATE every STATE_EVERY records (and at the end)."""
    rng = random.Random(seed)
    encoder = msgspec.json.Encoder()
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        out.write(encoder.encode(SCHEMA) + b"\n")
        lines: list[bytes] = []
        for i in range(1, records + 1):
            created = rng.randrange(0, 40_000_000)
            name = rng.choice(_NAMES)
            city, country = rng.choice(_CITIES)
            record = {
                "id": i,
                "created_at": _iso(created),
                "updated_at": _iso(created + rng.randrange(0, 900_000)) if i % 3 else None,
                "amount": round(rng.uniform(0, 5000), 2),
                "quantity": rng.randrange(1, 50) if i % 11 else None,
                "paid": rng.random() < 0.7,
                "status": rng.choice(_STATUSES),
                "note": rng.choice(_NOTES),
                "tags": rng.sample(_TAGS, rng.randrange(0, 4)),
                "customer": {
                    "id": rng.randrange(1, 50_000),
                    "name": name,
                    "email": f"user{rng.randrange(1, 50_000)}@example.com" if i % 7 else None,
                    "address": {"city": city, "country": country},
                },
            }
            lines.append(encoder.encode({"type": "RECORD", "stream": STREAM, "record": record}))
            if i % STATE_EVERY == 0 or i == records:
                state = {"type": "STATE", "value": {"bookmarks": {STREAM: {"id": i}}}}
                lines.append(encoder.encode(state))
                out.write(b"\n".join(lines) + b"\n")
                lines.clear()
    tmp.replace(path)


def stream_file(directory: Path, records: int, seed: int = 42) -> Path:
    """The stream's file in `directory`, generated once per (size, seed, generator version)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{STREAM}-{records}-s{seed}-v{VERSION}.jsonl"
    if not path.exists():
        generate(path, records, seed)
    return path


def last_state(records: int) -> dict:
    return {"bookmarks": {STREAM: {"id": records}}}
