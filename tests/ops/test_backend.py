"""Backend selection: the default per device, the context manager, the environment variable,
and the import-time fallback when the compiled module is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import camfast
from camfast import _ext
from camfast.ops import _backend, use_backend


def test_default_is_native_on_cpu_when_built(monkeypatch):
    monkeypatch.delenv("CAMFAST_BACKEND", raising=False)
    expected = "native" if _ext.native is not None else "reference"
    assert _backend.resolve(torch.device("cpu")) == expected
    assert camfast.ops.available_backends("cpu")[0] == expected
    assert "reference" in camfast.ops.available_backends("cpu")


def test_context_manager_overrides_env_and_nests(monkeypatch):
    monkeypatch.setenv("CAMFAST_BACKEND", "reference")
    cpu = torch.device("cpu")
    assert _backend.resolve(cpu) == "reference"
    with use_backend("triton"):
        assert _backend.resolve(cpu) == "triton"
        with use_backend("reference"):
            assert _backend.resolve(cpu) == "reference"
        assert _backend.resolve(cpu) == "triton"
    assert _backend.resolve(cpu) == "reference"


def test_context_manager_restores_on_error():
    before = _backend.requested_backend()
    with pytest.raises(KeyError):
        with use_backend("reference"):
            raise KeyError("boom")
    assert _backend.requested_backend() == before


def test_bad_backend_names(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        with use_backend("cuda"):
            pass
    monkeypatch.setenv("CAMFAST_BACKEND", "fast")
    with pytest.raises(ValueError, match="CAMFAST_BACKEND must be one of"):
        _backend.resolve(torch.device("cpu"))


def test_unavailable_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with use_backend("triton"):
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            camfast.ops.grad_weighted_map(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3))


def test_backend_is_chosen_per_call_not_per_import():
    a, g = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with use_backend("reference"):
        r = camfast.ops.grad_weighted_map(a, g, "layercam")
    n = camfast.ops.grad_weighted_map(a, g, "layercam")
    torch.testing.assert_close(n, r)


# Makes `from camfast import _C` raise ImportError, as a missing or broken build would.
HIDE_NATIVE = "import sys; sys.modules['camfast._C'] = None\n"


def _run_without_native(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "CAMFAST_REQUIRE_NATIVE"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", HIDE_NATIVE + textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, timeout=120)


def test_missing_extension_warns_once_and_falls_back():
    proc = _run_without_native("""
        import warnings, torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import camfast
            import camfast.ops
        msgs = [w for w in caught if issubclass(w.category, camfast.NativeExtensionWarning)]
        assert len(msgs) == 1, msgs
        assert "reference" in str(msgs[0].message)
        assert "native" not in camfast.ops.available_backends("cpu")
        a, g = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
        m = camfast.ops.grad_weighted_map(a, g, "zoom")
        torch.testing.assert_close(m, (a * g).sum(1).relu())
        print("fallback ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "fallback ok" in proc.stdout


def test_missing_extension_is_an_error_when_required():
    proc = _run_without_native("import camfast\n", CAMFAST_REQUIRE_NATIVE="1")
    assert proc.returncode != 0
    assert "CAMFAST_REQUIRE_NATIVE=1 but camfast._C could not be loaded" in proc.stderr


def test_native_build_matches_sources():
    if _ext.native is None:
        pytest.skip("camfast._C not loaded")
    from pathlib import Path

    csrc = Path(__file__).resolve().parents[2] / "csrc"
    assert _ext.native.source_hash() == _ext.source_hash(csrc)
