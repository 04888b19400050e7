"""Backend choice, lazy imports and the public API of moelens.kernels."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import moelens.kernels
from moelens.errors import ConfigError
from moelens.kernels import backend

PUBLIC = [
    "HostRecords", "RULES", "RecordBuffer", "RouteRecords", "Selection", "StatsAccumulator", "StatsTables",
    "choose_backend", "route_records", "route_records_torch", "select_experts", "select_experts_torch",
    "triton_available", "update_stats", "update_stats_torch",
]  # fmt: skip
TRITON_NAMES = {"route_records", "select_experts", "update_stats"}


@pytest.fixture
def fake_triton(monkeypatch):
    """Pretend Triton imports (compiled mode) whatever is installed here."""
    monkeypatch.delenv("MOELENS_DISABLE_TRITON", raising=False)
    monkeypatch.setattr(backend, "triton_available", lambda: True)
    monkeypatch.setattr(backend, "triton_interpreted", lambda: False)
    return monkeypatch


def test_public_api_is_listed_and_resolves():
    assert sorted(moelens.kernels.__all__) == sorted(PUBLIC)
    assert sorted(dir(moelens.kernels)) == sorted(PUBLIC)
    for name in set(PUBLIC) - TRITON_NAMES:  # the Triton names resolve in the subprocess test below
        assert getattr(moelens.kernels, name) is not None
    with pytest.raises(AttributeError):
        moelens.kernels.not_a_kernel  # noqa: B018


def test_import_loads_neither_torch_nor_triton():
    code = (
        "import json, sys, moelens.kernels as k; k.choose_backend('auto', 'cpu');"
        "print(json.dumps(['torch' in sys.modules, 'triton' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, False]


def test_triton_names_resolve_where_triton_is_installed():
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    code = (
        "import moelens.kernels as k;"
        "print([getattr(k, n).__module__ for n in ('route_records', 'select_experts', 'update_stats')])"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "moelens.kernels.records_triton" in out.stdout and "moelens.kernels.stats_triton" in out.stdout


@pytest.mark.parametrize("device", [None, "cpu", "cuda", "cuda:1"])
def test_torch_is_always_available(device):
    assert backend.choose_backend("torch", device) == "torch"


def test_auto_prefers_triton_on_cuda_only(fake_triton):
    assert backend.choose_backend("auto", "cuda:0") == "triton"
    assert backend.choose_backend("auto", "cpu") == "torch"
    assert backend.choose_backend("auto", None) == "torch"
    fake_triton.setenv("MOELENS_DISABLE_TRITON", "1")
    assert backend.choose_backend("auto", "cuda") == "torch"
    fake_triton.setenv("MOELENS_DISABLE_TRITON", "0")
    assert backend.choose_backend("auto", "cuda") == "triton"
    fake_triton.setattr(backend, "triton_available", lambda: False)
    assert backend.choose_backend("auto", "cuda") == "torch"


def test_torch_device_objects_are_understood(fake_triton):
    torch = pytest.importorskip("torch")
    assert backend.choose_backend("auto", torch.device("cuda", 0)) == "triton"
    assert backend.choose_backend("auto", torch.device("cpu")) == "torch"


def test_explicit_triton_errors_say_what_to_do(fake_triton):
    assert backend.choose_backend("triton", "cuda") == "triton"
    with pytest.raises(ConfigError, match="needs a CUDA device") as err:
        backend.choose_backend("triton", "cpu")
    assert "\n" not in str(err.value) and "'torch'" in str(err.value)
    fake_triton.setenv("MOELENS_DISABLE_TRITON", "true")
    with pytest.raises(ConfigError, match="Unset MOELENS_DISABLE_TRITON"):
        backend.choose_backend("triton", "cuda")
    fake_triton.delenv("MOELENS_DISABLE_TRITON")
    fake_triton.setattr(backend, "triton_available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'moelens\[triton\]'") as err:
        backend.choose_backend("triton", "cuda")
    assert "\n" not in str(err.value)


def test_interpreter_allows_triton_on_cpu(fake_triton):
    fake_triton.setattr(backend, "triton_interpreted", lambda: True)
    assert backend.choose_backend("triton", "cpu") == "triton"
    assert backend.choose_backend("auto", "cpu") == "torch"  # auto never picks the slow interpreter


def test_unknown_backend():
    with pytest.raises(ConfigError, match="Unknown kernel backend 'cuda'"):
        backend.choose_backend("cuda", "cuda")


def test_triton_available_reports_the_install():
    installed = importlib.util.find_spec("triton") is not None
    if not installed:
        assert backend.triton_available() is False
        with pytest.raises(ConfigError, match="not installed"):
            backend.choose_backend("triton", "cuda")
    else:
        # find_spec does not import; triton_available would, so ask a fresh process
        code = "from moelens.kernels.backend import triton_available as t; print(t())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "True"


def test_triton_wrappers_refuse_cpu_tensors_outside_the_interpreter(fake_triton):
    backend.require_triton_device("cuda:0")
    with pytest.raises(ConfigError, match="backend 'torch'"):
        backend.require_triton_device("cpu")


def test_record_buffer_logs_its_backend(caplog):
    from moelens.kernels import RecordBuffer

    with caplog.at_level("INFO", logger="moelens.kernels"):
        RecordBuffer(1, 4, 2, 8, backend="auto")
    assert "kernel backend torch (requested auto, device cpu)" in caplog.text
