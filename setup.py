"""Build hook: ship the repository's top-level ``conf/`` inside the package, as ``vaelik/conf``.

The config tree stays at the top of the repository, where users read and edit it; a wheel (built
from the checkout or from the sdist, whose ``MANIFEST.in`` carries ``conf/``) gets a copy, so an
installed vaelik composes its configs from any directory. Editable installs read ``conf/`` from
the checkout itself (see ``vaelik.config.config_dir``). Everything else is in ``pyproject.toml``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIG_TREE = Path(__file__).resolve().parent / "conf"


class BuildWithConfigTree(build_py):
    """``build_py`` that also copies ``conf/`` into the built package as ``vaelik/conf``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "vaelik" / "conf"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(CONFIG_TREE, target, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildWithConfigTree})
