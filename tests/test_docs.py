"""The documentation: every how-to guide's code runs (each a small model on 8 fake CPU
devices, as the page shows it), the site builds with no warnings, and every public name
has a docstring."""

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shardsearch as ss

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = sorted((ROOT / "docs" / "snippets").glob("howto_*.py"))
# the framework each guide needs (optional extras: pip install -e ".[guides]")
NEEDS = {"howto_equinox.py": "equinox", "howto_haiku.py": "haiku", "howto_keras_jax.py": "keras",
         "howto_huggingface_flax.py": "transformers", "howto_flax_linen.py": "flax", "howto_flax_nnx.py": "flax"}
SLOW = {"howto_huggingface_flax.py"}  # a BERT: ~20 s of CPU


def test_every_guide_is_on_a_page():
    pages = "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    assert SNIPPETS and all(f'--8<-- "{s.name}"' in pages for s in SNIPPETS)


@pytest.mark.parametrize("script", [pytest.param(s, id=s.stem, marks=[pytest.mark.slow] if s.name in SLOW else [])
                                    for s in SNIPPETS])
def test_guide_code_runs(script):
    package = NEEDS.get(script.name)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install -e '.[guides]')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "matches jax.jit" in res.stdout or "loss after a step" in res.stdout, res.stdout


def test_the_site_builds_with_no_warnings(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip("the docs extra is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "WARNING" not in res.stderr, res.stderr
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "static_argnums" in reference and "alternatives" in reference  # docstrings made it in


def test_every_public_name_has_a_docstring():
    missing = []
    for name in ss.__all__:
        obj = getattr(ss, name)
        doc = inspect.getdoc(obj) or ""
        if not doc or (inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(")):  # dataclass's own
            missing.append(name)
    for cls in (ss.Plan, ss.AutoSharded):
        missing += [f"{cls.__name__}.{n}" for n, m in inspect.getmembers(cls)
                    if not n.startswith("_") and callable(m) and not inspect.getdoc(m)]
    assert not missing, missing


def test_the_readme_shows_the_fake_device_flag_and_links_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=8" in readme
    assert "docs/index.md" in readme and "mkdocs serve" in readme
    for link in ("docs/getting-started.md", "docs/guides/flax-nnx.md"):
        assert link in readme and (ROOT / link).exists()
