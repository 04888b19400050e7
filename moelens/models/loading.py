"""Load a model and its tokenizer from a local folder, an embedded short name or a hub id.

Resolution order for a model name: an existing local folder, then an embedded short name
(``moelens-mini``, ``moelens-mini-early``, ``moelens-mini-collapsed``), then a hub id through
transformers (offline machines get a clear error instead of a network stack trace). The model
class is the one its config declares in ``architectures``, so every family loads the way its
authors saved it; the embedded models load through exactly the same path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moelens.errors import ConfigError, ModelNotFoundError

__all__ = ["resolve_model", "load_model", "load_remote_model", "load_tokenizer", "LoadedModel", "pick_device",
           "pick_dtype"]


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any | None
    name: str  # as given by the user
    location: str  # folder or hub id actually loaded
    device: str
    dtype: str
    wrapper: Any = None  # an nnsight model when the weights live remotely (NDIF)


def resolve_model(name: str) -> str:
    """Map a user-given model name to a folder or hub id (no loading)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    from moelens.embedded import ALIASES, MODELS
    from moelens.embedded import resolve as resolve_embedded

    embedded = resolve_embedded(name)
    if embedded is not None:
        return str(embedded)
    if ALIASES.get(name, name) in MODELS:
        raise ModelNotFoundError(f"the embedded model {name!r} is not installed with this copy of moelens"
                                 " (its folder has no config.json); reinstall moelens.")
    if path.exists():
        raise ModelNotFoundError(f"{name} is a file, not a model folder; give the folder that holds config.json.")
    if name.startswith((".", "/", "~")) or os.sep in name.rstrip(os.sep).split(os.sep, 1)[0] or name.count("/") > 1:
        raise ModelNotFoundError(f"no model folder at {name}; check the path (or use a hub id like org/name).")
    return name


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available here; use --device cpu.")
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else "auto"
    return getattr(torch, dtype)


def _model_class(config: Any) -> Any:
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    for auto in ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModel"):
        auto_cls = getattr(transformers, auto)
        if type(config) in auto_cls._model_mapping:
            return auto_cls
    return transformers.AutoModel


def load_tokenizer(location: str, revision: str | None = None) -> Any | None:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location, revision=revision)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_model(name: str, *, device: str = "auto", dtype: str = "auto", revision: str | None = None,
               tokenizer: str | None = None, device_map: str | None = None, max_memory: dict[str, str] | None = None,
               offload_folder: str | None = None) -> LoadedModel:
    """Load ``name`` in eval mode on ``device``; raises :class:`ModelNotFoundError` if it cannot.

    With ``device_map`` (``auto``, ``balanced``, ``balanced_low_0``, ``sequential``) accelerate
    places the model over the GPUs, the CPU (``max_memory`` caps each) and ``offload_folder`` on
    disk; inputs then go to the CPU and accelerate's hooks move them layer by layer.
    """
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # moelens shows its own progress
    location = resolve_model(name)
    device = pick_device(device)
    try:
        config = AutoConfig.from_pretrained(location, revision=revision)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotFoundError(
            f"cannot load model {name!r}: not a local folder, not an embedded model, and the hub gave: {first[:160]}"
        ) from None
    cls = _model_class(config)
    torch_dtype = pick_dtype(dtype, device)
    placement = _placement(device_map, max_memory, offload_folder)
    try:
        model = cls.from_pretrained(location, revision=revision, dtype=torch_dtype, **placement)
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"cannot load the weights of {name!r}: {str(error).splitlines()[0][:200]}") from None
    if device_map is None:
        model = model.to(device)
    else:
        device = _input_device(model)
    model = model.eval()
    tok = load_tokenizer(tokenizer or location, revision=None if tokenizer else revision)
    actual = str(next(model.parameters()).dtype).replace("torch.", "")
    return LoadedModel(model, tok, name, location, device, actual)


def _placement(device_map: str | None, max_memory: dict[str, str] | None, offload_folder: str | None) -> dict:
    """``from_pretrained`` keyword arguments for a device map (none without one)."""
    if device_map is None:
        return {}
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise ConfigError("--device-map needs accelerate: pip install 'moelens[bigmodel]'.") from None
    out: dict[str, Any] = {"device_map": device_map}
    if max_memory:
        out["max_memory"] = {int(k) if str(k).isdigit() else k: int(v) if str(v).isdigit() else v
                             for k, v in max_memory.items()}
    if offload_folder:
        Path(offload_folder).mkdir(parents=True, exist_ok=True)
        out["offload_folder"] = offload_folder
    return out


def _input_device(model: Any) -> str:
    """Where a dispatched model takes its inputs: the first GPU its map uses, else the CPU."""
    placed = set((getattr(model, "hf_device_map", None) or {}).values())
    gpus = sorted(d for d in placed if isinstance(d, int) or (isinstance(d, str) and d.startswith("cuda")))
    if not gpus:
        return "cpu"
    first = gpus[0]
    return f"cuda:{first}" if isinstance(first, int) else first


def load_remote_model(name: str, *, revision: str | None = None) -> LoadedModel:
    """An ``nnsight.LanguageModel`` for a model hosted on NDIF: the module tree is built locally
    (no weights are loaded) so routers can be planned; forwards run remotely with ``remote=True``.
    Needs ``pip install 'moelens[nnsight]'`` and an NDIF API key (``nnsight.CONFIG``)."""
    try:
        from nnsight import LanguageModel
    except ImportError:
        raise ConfigError("remote tracing needs nnsight: pip install 'moelens[nnsight]'.") from None
    try:
        wrapper = LanguageModel(name, revision=revision) if revision else LanguageModel(name)
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"cannot describe remote model {name!r}: {str(error).splitlines()[0][:200]}") from None
    module = getattr(wrapper, "_module", None) or getattr(wrapper, "_model", None)
    return LoadedModel(module, getattr(wrapper, "tokenizer", None), name, name, "cpu", "remote", wrapper)
