"""ftprobe-similarity: SVCCA, PWCCA, orthogonal Procrustes and mutual k-NN metrics for ftprobe, as a plugin.

The metrics are registered in the ``ftprobe.metrics`` entry-point group (see ``pyproject.toml``): once the package is
installed, ``ftprobe metrics`` lists them and ``ftprobe compare --metrics svcca,pwcca`` runs them. The functions of
:mod:`ftprobe_similarity.functional` are the same statistics on whole feature matrices.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
