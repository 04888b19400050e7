"""The embedded default: small MoE checkpoints and an evaluation split shipped inside moelens.

``moelens-mini`` is a Qwen3-MoE causal LM trained by the project on CPU on multilingual,
multi-domain text from the package registries (see ``models/moelens-mini/README.md``);
``moelens-mini-early`` is an early checkpoint of the same run and ``moelens-mini-collapsed`` a
variant trained without load balancing whose routing collapses. Each folder loads with
``transformers.AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``, offline.

This module is the torch-free registry: it only maps names to folders, and imports nothing of
moelens (the model layer's loader resolves short names through it). Building the corpus, training,
measuring and writing the cards are repository tools, not part of the package: ``tools/embedded/``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ALIASES", "MODELS", "eval_split_path", "resolve"]

_ROOT = Path(__file__).resolve().parent

MODELS: dict[str, Path] = {
    name: _ROOT / "models" / name
    for name in ("moelens-mini", "moelens-mini-early", "moelens-mini-collapsed")
}
ALIASES: dict[str, str] = {"embedded": "moelens-mini"}


def resolve(name: str) -> Path | None:
    """Folder of an embedded checkpoint by short name (or alias), else None.

    >>> resolve("embedded").name
    'moelens-mini'
    >>> resolve("gpt2") is None
    True
    """
    key = ALIASES.get(name, name)
    path = MODELS.get(key)
    return path if path is not None and (path / "config.json").is_file() else None


def eval_split_path() -> Path:
    """The shipped evaluation split (JSON lines: text, domain, language, source, licence, meta)."""
    return _ROOT / "data" / "eval.jsonl"
