"""Sources of routing other than a running transformers model, all feeding the same schema.

:mod:`moelens.sources.merge` joins the shards of a data-parallel trace (a source for
:func:`moelens.pipeline.run.run_source`). The engine importers read the routing that serving and
training engines recorded: vLLM, SGLang, Megatron-Core, TensorRT-LLM.

Each engine has a reader that checks its files or objects against what the engine writes
(module docstrings cite the engine source each follows) and returns an :class:`ImportedRun`;
:func:`write` stores it in the same schema as a trace, with ``runs.config.source`` saying what the
source lacks (gate weights, token text, per-token routes)::

    from moelens import sources

    run = sources.from_vllm(llm.generate(prompts, params), num_experts=64)   # vLLM RequestOutputs
    run = sources.from_sglang(responses, num_experts=64, top_k=8)            # SGLang /generate responses
    run = sources.read("sglang-dump", ["dumps/"], top_k=8)                   # recorder .pt dumps
    sources.write(run, "runs.duckdb", documents="labels.jsonl")

or in one step, ``sources.import_routing("megatron", ["traces/"], "runs.duckdb", num_experts=64)``.
The command line is ``moelens import ENGINE FILES... --out DB``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from moelens.sources.base import SOURCE_KINDS, Doc, ImportedRun, ImportOptions, ImportSpec
from moelens.sources.write import ImportSummary, write

__all__ = ["read", "write", "import_routing", "from_vllm", "from_sglang", "dump_vllm", "ImportOptions",
           "ImportedRun", "ImportSummary", "ImportSpec", "Doc", "SOURCE_KINDS"]


def _options(options: ImportOptions | None, values: dict[str, Any]) -> ImportOptions:
    if options is not None and values:
        return options.replace(**values)
    return options or ImportOptions(**values)


def read(kind: str, paths: Sequence[str | os.PathLike], options: ImportOptions | None = None,
         **option_values: Any) -> ImportedRun:
    """Read ``kind``'s files (``vllm``, ``sglang``, ``sglang-dump``, ``megatron``, ``trtllm``)."""
    from moelens.errors import ConfigError

    opts = _options(options, option_values)
    paths = [os.fspath(p) for p in paths]
    if kind == "vllm":
        from moelens.sources.vllm import read_vllm as reader
    elif kind == "sglang":
        from moelens.sources.sglang import read_sglang as reader
    elif kind == "sglang-dump":
        from moelens.sources.sglang_dump import read_sglang_dump as reader
    elif kind == "megatron":
        from moelens.sources.megatron import read_megatron as reader
    elif kind == "trtllm":
        from moelens.sources.trtllm import read_trtllm as reader
    else:
        raise ConfigError(f"unknown engine {kind!r}; choose one of {', '.join(SOURCE_KINDS)}.")
    return reader(paths, opts)


def from_vllm(outputs: Any, options: ImportOptions | None = None, **option_values: Any) -> ImportedRun:
    """An :class:`ImportedRun` from vLLM ``RequestOutput`` objects (see :mod:`moelens.sources.vllm`)."""
    from moelens.sources.vllm import from_request_outputs

    return from_request_outputs(outputs, _options(options, option_values))


def from_sglang(responses: Any, options: ImportOptions | None = None, **option_values: Any) -> ImportedRun:
    """An :class:`ImportedRun` from SGLang ``/generate`` responses (see :mod:`moelens.sources.sglang`)."""
    from moelens.sources.sglang import from_responses

    return from_responses(responses, _options(options, option_values))


def dump_vllm(outputs: Any, path: str | os.PathLike, *, append: bool = False) -> int:
    """Write vLLM ``RequestOutput`` objects as moelens's JSONL dump (import it with ``moelens import vllm``)."""
    from moelens.sources.vllm import dump_request_outputs

    return dump_request_outputs(outputs, path, append=append)


def import_routing(kind: str, inputs: Any, out: str | os.PathLike, *, run_id: str | None = None,
                   documents: Any = None, overwrite: bool = False, progress: bool = False,
                   **option_values: Any) -> ImportSummary:
    """Read (files, or engine objects for ``vllm``/``sglang``) and write in one call."""
    if not isinstance(inputs, (str, os.PathLike)):
        inputs = list(inputs)
    objects = kind in ("vllm", "sglang") and not _all_paths(inputs)
    if objects:
        run = from_vllm(inputs, **option_values) if kind == "vllm" else from_sglang(inputs, **option_values)
    else:
        run = read(kind, [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs), **option_values)
    return write(run, out, run_id=run_id, documents=documents, overwrite=overwrite, progress=progress)


def _all_paths(inputs: Any) -> bool:
    if isinstance(inputs, (str, os.PathLike)):
        return True
    return bool(inputs) and all(isinstance(x, (str, os.PathLike)) for x in inputs)
