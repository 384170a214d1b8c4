"""The committed benchmark results: every file has the README's one shape, and the README's
generated blocks are what benchmarks/render_tables.py makes of them (a results file or a
block edited by hand, or a benchmark writing its own shape, fails here)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "render_tables", ROOT / "benchmarks" / "render_tables.py"
)
render_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_tables)

RESULTS = render_tables.load_all(str(ROOT / "benchmarks" / "results"))
ROW_KEYS = {"bench", "shape", "dtype", "impl", "median_ms"}


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_results_files_have_the_shared_shape(name):
    result = RESULTS[name]
    for key, kind in (("machine", str), ("torch", str), ("commit", str), ("threads", int)):
        assert isinstance(result.get(key), kind), (name, key)
    assert isinstance(result["ratios"], dict) and result["rows"]
    for row in result["rows"]:
        assert ROW_KEYS <= set(row), (name, ROW_KEYS - set(row))
        assert isinstance(row["shape"], dict)


def test_readme_blocks_are_the_rendered_results():
    readme = (ROOT / "README.md").read_text()
    blocks = dict(
        re.findall(r"<!-- bench:(\w+):start -->\n(.*?)<!-- bench:\1:end -->", readme, re.S)
    )
    assert set(blocks) <= set(RESULTS)  # no block without its results file
    assert blocks, "the README has no generated blocks"
    for name, block in blocks.items():
        assert block == render_tables.render(RESULTS[name]), name
