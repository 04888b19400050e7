"""The analysis layer needs only a database: it never imports torch, moelens.hooks or moelens.kernels."""

from __future__ import annotations

import subprocess
import sys

import moelens.analysis

MODULES = ["moelens.analysis", "moelens.analysis.facade", "moelens.analysis.report", "moelens.analysis.layerpass",
           "moelens.analysis.load", "moelens.analysis.confidence", "moelens.analysis.specialization",
           "moelens.analysis.vocabulary", "moelens.analysis.position", "moelens.analysis.coactivation",
           "moelens.analysis.temporal", "moelens.analysis.crosslayer", "moelens.analysis.compare",
           "moelens.analysis.render", "moelens.analysis.labels", "moelens.analysis.runs", "moelens.analysis.sections",
           "moelens.analysis.stats_report", "moelens.analysis.sharematrix", "moelens.analysis.export",
           "moelens.cli.report", "moelens.cli.compare", "moelens.cli.runs"]


def test_analysis_never_imports_torch_hooks_or_kernels(tmp_path):
    code = f"""
import sys
import numpy as np
import moelens
for name in {MODULES!r}:
    __import__(name)
from moelens.analysis import from_arrays, build_report
from moelens.store.arrays import save_routing
rng = np.random.default_rng(0)
e = np.argsort(rng.random((2, 200, 8)), axis=2)[:, :, :2].astype(np.int16)
save_routing(from_arrays(e, num_experts=8, doc_id=np.repeat(np.arange(10), 20)), {str(tmp_path / 'r.duckdb')!r})
build_report({str(tmp_path / 'r.duckdb')!r})
with moelens.open({str(tmp_path / 'r.duckdb')!r}) as t:
    t.load(); t.specialization("position"); t.repeat_rates(); t.coactivation(); t.crosslayer(); t.vocabulary()
    t.share_matrix("position"); t.runs()
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "moelens.hooks", "moelens.kernels",
                                                                     "transformers", "triton")))
print("BAD", bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "BAD []"


def test_public_api_is_listed():
    assert sorted(moelens.analysis.__all__) == sorted(set(moelens.analysis.__all__))
    for name in moelens.analysis.__all__:
        assert getattr(moelens.analysis, name) is not None, name
    import moelens as top
    from moelens.viz.notebook import Trace

    # moelens.open is the presentation-layer facade: the analysis methods plus chart methods
    assert issubclass(Trace, moelens.analysis.facade.Trace)
    assert top.open.__module__ == "moelens.viz.notebook"
