"""The read-only HTML overview at ``GET /``: what landed where, readable without any tool.

Plain server-rendered HTML; every value goes through ``html.escape`` and elements carry stable
ids/classes (``section.dataset[data-title]``, ``table.rows``, ``table.ingestions``) for tests.
"""

from __future__ import annotations

from html import escape
from typing import Any

from . import jsoncodec
from .config import EmulatorConfig
from .store import Store

ROWS_SHOWN = 20
INGESTIONS_SHOWN = 50

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.5em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.muted{color:#777}code{background:#f6f6f6;padding:0 3px}
.status-success{color:#176917}.status-partial{color:#a66a00}.status-failed{color:#b00020}
"""


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="null"></td>'
    text = value if isinstance(value, str) else jsoncodec.dumps(value)
    return f"<td>{escape(text)}</td>"


def _rows_table(columns: dict[str, str], rows: list[dict[str, Any]]) -> str:
    names = list(columns)
    for row in rows:  # fields that only ever held null have no inferred column
        names.extend(n for n in row if n not in columns and n not in names)
    head = "".join(
        f'<th data-column="{escape(n)}">{escape(n)}'
        f' <span class="muted">{escape(columns.get(n, "null"))}</span></th>'
        for n in names
    )
    body = "".join("<tr>" + "".join(_cell(row.get(n)) for n in names) + "</tr>" for row in rows)
    return f'<table class="rows"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _ingestions_table(items: list[dict[str, Any]]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "ingestion",
            "dataset",
            "time",
            "status",
            "received",
            "appended",
            "overwritten",
            "rejected",
        )
    )
    lines = []
    for i in items:
        counts = "".join(
            f"<td>{'' if i[k] is None else i[k]}</td>"
            for k in ("received", "appended", "overwritten", "rejected")
        )
        lines.append(
            f'<tr id="ingestion-{escape(i["id"])}"><td><code>{escape(i["id"])}</code></td>'
            f"<td><code>{escape(i['dataset_id'])}</code></td><td>{escape(i['timestamp'])}</td>"
            f'<td class="status-{escape(i["status"])}">{escape(i["status"])}</td>{counts}</tr>'
        )
    return (
        f'<table class="ingestions"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(lines)}</tbody></table>"
    )


def render(store: Store, config: EmulatorConfig) -> str:
    """The whole page as one HTML string."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>Databox emulator</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Databox emulator</h1>",
    ]
    with store.lock:
        store.process_due(config.clock())
        sources = store.data_sources()
        parts.append(
            f'<p class="muted">{len(sources)} data source(s), '
            f"{store.pending_count} ingestion(s) processing.</p>"
        )
        for source in sources:
            parts.append(
                f'<section class="data-source" id="data-source-{source["id"]}" '
                f'data-title="{escape(source["title"])}">'
                f'<h2>Data source {escape(source["title"])} <span class="muted">#{source["id"]}, '
                f"account {source['accountId']}, {escape(source['timezone'])}</span></h2>"
            )
            datasets = store.datasets(source["id"])
            if not datasets:
                parts.append('<p class="muted">No datasets.</p>')
            for dataset in datasets:
                columns = store.columns(dataset["id"])
                keys = ", ".join(dataset["primaryKeys"] or []) or "none (append only)"
                parts.append(
                    f'<section class="dataset" id="dataset-{escape(dataset["id"])}" '
                    f'data-title="{escape(dataset["title"])}">'
                    f'<h3>{escape(dataset["title"])} <span class="muted">'
                    f"<code>{escape(dataset['id'])}</code></span></h3>"
                    f'<p>Rows: <span class="row-count">{dataset["rowCount"]}</span>; '
                    f"primary keys: {escape(keys)}; columns: "
                    f'<span class="column-count">{len(columns)}</span></p>'
                    + _rows_table(columns, store.rows(dataset["id"], ROWS_SHOWN))
                    + "</section>"
                )
            parts.append("</section>")
        recent = store.recent_ingestions(INGESTIONS_SHOWN)
    parts.append("<h2>Recent ingestions</h2>")
    parts.append(_ingestions_table(recent) if recent else '<p class="muted">None yet.</p>')
    parts.append("</body></html>")
    return "".join(parts)
