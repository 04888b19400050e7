"""The README's family counts and table come from the family table, never by hand."""

from __future__ import annotations

import re
from pathlib import Path

from moelens.cli.families import markdown
from moelens.models.families import FAMILIES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_family_block_is_generated_from_the_table():
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- families:begin", 1)[1].split("-->", 1)[1].split("<!-- families:end -->", 1)[0]
    summary, table = markdown().split("\n| family", 1)
    assert summary.strip() in block, "README family summary is stale: paste `moelens families --markdown`"
    assert ("| family" + table).strip() in block, "README family table is stale: paste `moelens families --markdown`"


def test_every_family_count_in_the_readme_is_the_tables():
    counts = {int(n) for n in re.findall(r"(\d+) (?:supported|MoE text) families", README.read_text(encoding="utf-8"))}
    assert counts == {len(FAMILIES)}, counts
