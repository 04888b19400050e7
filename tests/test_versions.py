"""The tested transformers range: one line of warning outside it, and pyproject, code and lock agree."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from moelens.errors import UntestedVersionWarning
from moelens.models import versions

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("version", "outside"), [
    ("5.23.0", False), ("5.24.0", False), ("5.23.1", False), ("5.24.0.dev0", False),
    ("5.22.9", True), ("5.25.0", True), ("6.0.0", True), ("4.57.1", True)])
def test_outside_tested_range(version, outside):
    assert versions.outside_tested_range(version, ("5.23.0", "5.24.0")) is outside


def test_warns_once_in_one_line_outside_the_range(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.99.0")
    versions.check_transformers_version.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            versions.check_transformers_version()
            versions.check_transformers_version()
        found = [w for w in caught if issubclass(w.category, UntestedVersionWarning)]
        assert len(found) == 1
        text = str(found[0].message)
        assert "\n" not in text and "5.99.0" in text and "5.23.0 to 5.25.0" in text
    finally:
        versions.check_transformers_version.cache_clear()


def test_pyproject_code_and_lock_state_the_same_range():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    tested = tuple(project["tool"]["moelens"]["tested-transformers"])
    assert tested == versions.TESTED_TRANSFORMERS
    requirement = next(d for d in project["project"]["dependencies"] if d.startswith("transformers"))
    assert f">={tested[0].rsplit('.0', 1)[0]}" in requirement  # the lower bound is the oldest release tested
    lock = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert not versions.outside_tested_range(lock["transformers"], tested)
