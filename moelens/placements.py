"""Expert loads and expert-parallel placements in the files serving engines read back.

A placement is any object with the DeepSeek EPLB fields (contract 4): ``phy2log [L, P]`` (logical
expert of each physical slot; slot ``s`` lives on GPU ``s // (P / num_gpus)``), ``log2phy
[L, E, R]`` (-1 padded), ``logcnt [L, E]``, ``layers [L]`` (decoder-layer index of each row) and
``num_gpus``, ``num_nodes``, ``num_groups``. :func:`greedy_placement` builds one without
replicas (DeepSeek's ``balanced_packing``) until the EPLB placement of the serving analyses is
used instead. What each engine reads (``docs/engines.md`` has the sources):

* SGLang ``--init-expert-location FILE.json`` (``srt/eplb/expert_location.py``
  ``compute_initial_expert_location_metadata``): ``{"physical_to_logical_map": [num_layers][P]}``
  (``init_by_mapping(**data)``: no other key), one row per decoder layer; or
  ``{"logical_count": [num_layers][E]}``, from which SGLang runs its own EPLB (``init_by_eplb``).
* TensorRT-LLM ``moe_config.load_balancer: FILE.yaml``: ``{num_slots, initial_global_assignments:
  {layer: [expert of each slot]}, layer_updates_per_iter: 0}`` (``generate_eplb_config.py``); its
  load statistics are ``meta_info.json`` + ``rank0.safetensors`` (``expert_statistic.py``), which
  ``generate_eplb_config.py`` reads.
* vLLM: ``EPLBConfig`` (``vllm/config/parallel.py``) reads no placement or load file; moelens
  writes the tensors its ``EplbState`` holds (``physical_to_logical_map``,
  ``logical_to_physical_map``, ``logical_replica_count``, one row per MoE layer) and the load
  ``[num_moe_layers, num_logical_experts]`` its rebalancer consumes, as safetensors.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moelens.errors import ConfigError

__all__ = ["Placement", "greedy_placement", "check_placement", "run_load", "write_placement", "write_load",
           "ENGINES"]

ENGINES = ("sglang", "vllm", "trtllm")


@dataclass(frozen=True)
class Placement:
    """A placement with the DeepSeek EPLB fields (see the module docstring)."""

    phy2log: np.ndarray
    log2phy: np.ndarray
    logcnt: np.ndarray
    layers: np.ndarray
    num_gpus: int
    num_nodes: int = 1
    num_groups: int = 1


def _from_phy2log(phy2log: np.ndarray, layers: Any, num_experts: int, num_gpus: int, num_nodes: int = 1,
                  num_groups: int = 1) -> Placement:
    L, P = phy2log.shape
    logcnt = np.stack([np.bincount(row, minlength=num_experts) for row in phy2log]) if L else np.zeros((0, num_experts))
    R = int(logcnt.max()) if logcnt.size else 1
    log2phy = np.full((L, num_experts, R), -1, np.int64)
    for li in range(L):
        seen = np.zeros(num_experts, np.int64)
        for s, e in enumerate(phy2log[li]):
            log2phy[li, e, seen[e]] = s
            seen[e] += 1
    return Placement(phy2log.astype(np.int64), log2phy, logcnt.astype(np.int64), np.asarray(layers, np.int64),
                     num_gpus, num_nodes, num_groups)


def greedy_placement(counts: np.ndarray, layers: Any, num_gpus: int) -> Placement:
    """One slot per expert, ``E / num_gpus`` per GPU: heaviest expert first onto the lightest GPU
    with room (DeepSeek EPLB ``balanced_packing``; the ``greedy`` placement of
    :func:`moelens.analysis.load.device_loads`). Ties go to the lower GPU and expert id."""
    counts = np.asarray(counts, dtype=np.float64)
    L, E = counts.shape
    if num_gpus < 1 or E % num_gpus:
        raise ConfigError(f"{E} experts do not split evenly over --ep {num_gpus} GPUs; choose a divisor of {E}.")
    m = E // num_gpus
    phy2log = np.zeros((L, E), np.int64)
    for li in range(L):
        load, packs = np.zeros(num_gpus), [[] for _ in range(num_gpus)]
        for e in np.argsort(-counts[li], kind="stable"):
            room = [g for g in range(num_gpus) if len(packs[g]) < m]
            g = min(room, key=lambda g: (load[g], g))
            packs[g].append(int(e))
            load[g] += counts[li, e]
        phy2log[li] = [e for pack in packs for e in pack]
    return _from_phy2log(phy2log, layers, E, num_gpus)


def check_placement(placement: Any, num_experts: int) -> Placement:
    """The placement's fields as arrays, after checking that they describe one consistent placement."""
    try:
        phy2log = np.asarray(placement.phy2log, dtype=np.int64)
        log2phy = np.asarray(placement.log2phy, dtype=np.int64)
        logcnt = np.asarray(placement.logcnt, dtype=np.int64)
        layers = np.asarray(placement.layers, dtype=np.int64)
        gpus, nodes, groups = int(placement.num_gpus), int(placement.num_nodes), int(placement.num_groups)
    except AttributeError as error:
        raise ConfigError(f"not a placement: {error} (it needs phy2log, log2phy, logcnt, layers, num_gpus, "
                          "num_nodes, num_groups).") from None
    if phy2log.ndim != 2 or len(layers) != phy2log.shape[0]:
        raise ConfigError(f"phy2log is {list(phy2log.shape)} for {len(layers)} layers.")
    L, P = phy2log.shape
    if gpus < 1 or P % gpus:
        raise ConfigError(f"{P} physical slots do not split evenly over num_gpus={gpus}.")
    if phy2log.min(initial=0) < 0 or phy2log.max(initial=0) >= num_experts:
        raise ConfigError(f"phy2log names experts outside [0, {num_experts}).")
    for li in range(L):
        cnt = np.bincount(phy2log[li], minlength=num_experts)
        if (cnt == 0).any():
            raise ConfigError(f"layer {int(layers[li])}: expert {int(np.flatnonzero(cnt == 0)[0])} has no slot.")
        if logcnt.shape != (L, num_experts) or not np.array_equal(cnt, logcnt[li]):
            raise ConfigError(f"layer {int(layers[li])}: logcnt does not count phy2log's replicas.")
        for e in range(num_experts):
            slots = log2phy[li, e][log2phy[li, e] >= 0]
            if sorted(slots.tolist()) != np.flatnonzero(phy2log[li] == e).tolist():
                raise ConfigError(f"layer {int(layers[li])}: log2phy of expert {e} disagrees with phy2log.")
    return Placement(phy2log, log2phy, logcnt, layers, gpus, nodes, groups)


def run_load(db: Any, run_id: str | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(layers[L], counts[L, E], run)`` of a run: routed choices per (MoE layer, expert)."""
    from moelens.store import Store

    store = db if isinstance(db, Store) else Store(db, read_only=True)
    try:
        info = store.require_run(run_id)
        E = info.num_experts
        row = store.con.execute("SELECT num_layers, top_k FROM runs WHERE run_id = ?", [info.run_id]).fetchone()
        meta = {"run_id": info.run_id, "num_experts": E, "num_layers": int(row[0]), "top_k": int(row[1])}
        if info.config.get("identity", {}).get("mode") == "stats":
            rows = store.con.execute("SELECT layer, expert, count FROM stats_expert_counts WHERE run_id = ? AND "
                                     "label_kind = 'all'", [info.run_id]).fetchall()
            layers = np.array(sorted({r[0] for r in store.con.execute(
                "SELECT DISTINCT layer FROM stats_tokens WHERE run_id = ?", [info.run_id]).fetchall()}), np.int64)
            counts = np.zeros((len(layers), E), np.int64)
            index = {int(x): i for i, x in enumerate(layers)}
            for layer, expert, count in rows:
                counts[index[layer], expert] += count
        else:
            from moelens.analysis.load import expert_counts
            from moelens.analysis.routing import load_run

            layers, counts, _ = expert_counts(load_run(store, info.run_id))
        return layers, counts, meta
    finally:
        if store is not db:
            store.close()


def _sglang_rows(placement: Placement, num_layers: int, num_experts: int) -> list[list[int]]:
    """One row per decoder layer: the placement's rows, a trivial map elsewhere (``init_trivial``)."""
    P = placement.phy2log.shape[1]
    rows = [[int(x) for x in np.arange(P) % num_experts] for _ in range(num_layers)]
    for li, layer in enumerate(placement.layers):
        if not 0 <= layer < num_layers:
            raise ConfigError(f"placement layer {int(layer)} is outside the model's {num_layers} layers.")
        rows[int(layer)] = [int(x) for x in placement.phy2log[li]]
    return rows


def write_placement(placement: Any, engine: str, path: str | os.PathLike, *, num_experts: int,
                    num_layers: int | None = None) -> Path:
    """Write ``placement`` as ``engine`` reads it (see the module docstring); returns the path."""
    p = check_placement(placement, num_experts)
    path = Path(path)
    if engine == "sglang":
        layers = num_layers if num_layers is not None else int(p.layers.max()) + 1
        path.write_text(json.dumps({"physical_to_logical_map": _sglang_rows(p, layers, num_experts)}))
    elif engine == "trtllm":
        _write_yaml(path, {"num_slots": int(p.phy2log.shape[1]),
                           "initial_global_assignments": {int(layer): [int(x) for x in row]
                                                          for layer, row in zip(p.layers, p.phy2log)},
                           "layer_updates_per_iter": 0})
    elif engine == "vllm":
        from safetensors.numpy import save_file

        save_file({"physical_to_logical_map": np.ascontiguousarray(p.phy2log),
                   "logical_to_physical_map": np.ascontiguousarray(p.log2phy),
                   "logical_replica_count": np.ascontiguousarray(p.logcnt),
                   "layers": np.ascontiguousarray(p.layers)}, str(path),
                  metadata={"format": "moelens vLLM EplbState tensors", "num_gpus": str(p.num_gpus),
                            "num_nodes": str(p.num_nodes), "num_groups": str(p.num_groups)})
    else:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
    return path


def write_load(layers: Any, counts: np.ndarray, engine: str, path: str | os.PathLike, *, num_layers: int,
               top_k: int) -> Path:
    """Write per-layer expert loads as ``engine`` reads them back; returns the path written."""
    layers = np.asarray(layers, np.int64)
    counts = np.asarray(counts, np.int64)
    path = Path(path)
    if engine == "sglang":  # {"logical_count": [num_layers][E]}: SGLang then runs its own EPLB
        full = np.zeros((num_layers, counts.shape[1]), np.int64)
        full[layers] = counts
        path.write_text(json.dumps({"logical_count": full.tolist()}))
    elif engine == "trtllm":  # EXPERT_STATISTIC_PATH layout, one iteration, for generate_eplb_config.py
        from safetensors.numpy import save_file

        path.mkdir(parents=True, exist_ok=True)
        (path / "meta_info.json").write_text(json.dumps({"num_experts": int(counts.shape[1]),
                                                         "num_experts_per_token": int(top_k)}))
        save_file({f"0_{int(layer)}": np.ascontiguousarray(c) for layer, c in zip(layers, counts)},
                  str(path / "rank0.safetensors"))
    elif engine == "vllm":  # the global_expert_load_window shape: [num_moe_layers, num_logical_experts]
        from safetensors.numpy import save_file

        save_file({"expert_load": np.ascontiguousarray(counts), "layers": np.ascontiguousarray(layers)}, str(path),
                  metadata={"format": "moelens vLLM expert load"})
    else:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
    return path


def _write_yaml(path: Path, config: dict[str, Any]) -> None:
    """YAML as ``generate_eplb_config.py`` ``save_eplb_config`` writes it (lists inline)."""
    lines = [f"num_slots: {config['num_slots']}", "initial_global_assignments:"]
    for layer, row in config["initial_global_assignments"].items():
        lines.append(f"  {layer}: [{', '.join(str(x) for x in row)}]")
    lines.append(f"layer_updates_per_iter: {config['layer_updates_per_iter']}")
    path.write_text("\n".join(lines) + "\n")
