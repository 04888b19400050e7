"""The Triton kernels compile for a real GPU target (frontend, LLVM and ptxas), without a GPU.

The interpreter (tests/test_kernels_triton.py) checks what the kernels compute; it does not
run Triton's compiler, which is stricter about types, constexprs and loop-carried values. Here
each kernel is compiled ahead of time for sm_80 in every constexpr branch the wrappers use.
Compilation needs a non-interpreted triton, so it runs in a fresh process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

# find_spec, not import: importing triton here would fix its mode for the whole test session
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed (pip install 'moelens[triton]')"
)

SCRIPT = textwrap.dedent(
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from moelens.kernels import records_triton, select_triton, stats_triton

    def build(fn, types, consts):
        sig = {n: "constexpr" if n in consts else types.get(n, "i32") for n in fn.arg_names}
        kernel = triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 80, 32),
                                options={"num_warps": 4})
        assert kernel.asm["cubin"], fn.__name__

    rec = {"logits_ptr": "*bf16", "in_ids_ptr": "*i64", "in_w_ptr": "*bf16", "valid_ptr": "*i1",
           "counts_ptr": "*i32", "out_ids_ptr": "*i16", "out_w_ptr": "*fp16", "ent_ptr": "*fp32",
           "margin_ptr": "*fp32", "lse_ptr": "*fp32"}
    for has_ids in (True, False):
        build(records_triton._records_kernel, rec, dict(HAS_IDS=has_ids, HAS_VALID=True, HAS_COUNTS=True,
              BLOCK_T=16, BLOCK_E=256, BLOCK_K=8))
    build(records_triton._records_kernel, {**rec, "counts_ptr": "*i64", "out_w_ptr": "*fp32"},
          dict(HAS_IDS=False, HAS_VALID=False, HAS_COUNTS=True, BLOCK_T=64, BLOCK_E=64, BLOCK_K=2))
    sel = {"logits_ptr": "*fp16", "bias_ptr": "*fp32", "ids_ptr": "*i64", "w_ptr": "*fp32",
           "scale": "fp32", "eps": "fp32"}
    for rule in range(4):
        build(select_triton._select_kernel, sel, dict(RULE=rule, HAS_BIAS=rule >= 2, HAS_GROUPS=rule == 3,
              RENORM=rule != 1, BLOCK_T=16, BLOCK_E=256, BLOCK_K=8, BLOCK_G=8))
    st = {"ids_ptr": "*i16", "ent_ptr": "*fp32", "labels_ptr": "*i64", "valid_ptr": "*i1",
          "bin_scale": "fp32", **{n: "*i64" for n in ("counts_ptr", "coact_ptr", "hist_ptr", "tokens_ptr",
                                                     "lcounts_ptr", "lhist_ptr", "ltokens_ptr")}}
    for labels in (True, False):
        build(stats_triton._stats_kernel, st, dict(HAS_LABELS=labels, HAS_VALID=labels, BLOCK_T=128, BLOCK_K=8))
    print("compiled")
    """
)


@pytest.mark.slow
def test_kernels_compile_for_sm80():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    probe = "import triton.backends as b; print('nvidia' in b.backends)"
    has_nvidia = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    if has_nvidia.stdout.strip() != "True":
        pytest.skip("this triton build has no NVIDIA backend to compile for")
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.strip().endswith("compiled")
