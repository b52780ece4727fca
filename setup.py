"""Ships conf/ and sweeps/ inside the package (everything else is in pyproject.toml).

The two YAML trees stay at the top of the repository, where they are edited; a built wheel
carries them as `sae_sweep/conf` and `sae_sweep/sweeps`, where `sae_sweep/resources.py`
finds them, so an installed `sae-sweep` runs outside the checkout.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("conf", "sweeps")


class BuildWithYamlTrees(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the repository's own folders
            return
        root = Path(__file__).resolve().parent
        for name in SHIPPED:
            self.copy_tree(str(root / name), str(Path(self.build_lib) / "sae_sweep" / name))


setup(cmdclass={"build_py": BuildWithYamlTrees})
