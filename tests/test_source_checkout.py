"""Python started in the source checkout: the folder ``kernels/`` must not shadow PyPI's ``kernels``.

transformers >= 5.25 imports the PyPI package ``kernels``; ``python -m moelens`` (or pytest run as
``python -m pytest``) from the repository root puts the root first on ``sys.path``, where moelens'
own ``kernels/`` folder (installed as ``moelens.kernels``) would answer the bare name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import kernels, moelens.kernels as ours; "
         "print(getattr(kernels, 'MARK', None), Path(ours.__file__).parent.name, kernels is ours)")


def _run(code: str, extra_path: Path | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(extra_path) if extra_path else "") if p)
    return subprocess.run([sys.executable, "-c", "from pathlib import Path; " + code], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def test_the_bare_name_reaches_the_installed_package(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "kernels"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("MARK = 'pypi-kernels'\n")
    result = _run(PROBE, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pypi-kernels", "kernels", "False"]


def test_transformers_imports_from_the_checkout_root() -> None:
    """What failed under transformers 5.25 (its kernels integration imports ``kernels``)."""
    result = _run("import transformers.integrations.hub_kernels, importlib.util as u, moelens.kernels as ours; "
                  "spec = u.find_spec('kernels'); import kernels; "
                  "print(Path(ours.__file__).parent.name, kernels is ours)", None)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]
    assert result.stdout.split() == ["kernels", "False"]
