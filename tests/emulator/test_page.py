"""The read-only HTML page at ``/``."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import requests

from target_databox.emulator import Emulator

from .conftest import Api


class _Collector(HTMLParser):
    """Collects the text of ``td`` cells inside ``table.rows`` and the dataset titles."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.titles: list[str] = []
        self._in_rows = False
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section" and attributes.get("class") == "dataset":
            self.titles.append(attributes.get("data-title") or "")
        if tag == "table":
            self._in_rows = attributes.get("class") == "rows"
        if tag == "td" and self._in_rows:
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells[-1] += data


def test_page_shows_rows_and_escapes_html(api: Api, emu: Emulator) -> None:
    dataset = api.dataset(["id"], title="<Orders & co>")
    api.ingest(
        dataset,
        [
            {"id": 1, "note": "<script>alert(1)</script>", "tags": ["a", "b"]},
            {"id": 2, "note": 'say "hi" & bye', "when": "2024-01-02T03:04:05Z"},
        ],
    )
    response = requests.get(emu.url + "/", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    html = response.text
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    parser = _Collector()
    parser.feed(html)
    assert parser.titles == ["<Orders & co>"]
    assert "<script>alert(1)</script>" in parser.cells
    assert 'say "hi" & bye' in parser.cells
    assert '["a","b"]' in parser.cells
    assert "2024-01-02T03:04:05Z" in parser.cells
    assert re.search(r'<span class="row-count">2</span>', html)
    assert 'class="ingestions"' in html
    assert "status-success" in html


def test_page_shows_at_most_twenty_rows(api: Api, emu: Emulator) -> None:
    dataset = api.dataset()
    api.ingest(dataset, [{"n": n} for n in range(30)])
    html = requests.get(emu.url + "/", timeout=5).text
    parser = _Collector()
    parser.feed(html)
    assert parser.cells == [str(n) for n in range(20)]
    assert '<span class="row-count">30</span>' in html


def test_empty_page(emu: Emulator) -> None:
    html = requests.get(emu.url + "/", timeout=5).text
    assert "0 data source(s)" in html
    assert "None yet." in html
