"""ftprobe's metric contract (ftprobe.testing.MetricContract) for each metric, with default and non-default options;
the mutual k-NN run with a small ``max_samples`` streams, merges and resumes with its sample bound active."""

from __future__ import annotations

from ftprobe.testing import MetricContract

from ftprobe_similarity.metrics import PWCCA, SVCCA, MutualKNN, Procrustes


class TestSVCCA(MetricContract):
    metric_cls = SVCCA
    identity = {"svcca": 1.0, "correlations": 1.0}


class TestSVCCAOnMaxFeatures(MetricContract):
    metric_cls = SVCCA
    metric_kwargs = {"keep": 0.9, "features": "max"}
    identity = {"svcca": 1.0}


class TestPWCCA(MetricContract):
    metric_cls = PWCCA
    identity = {"pwcca": 1.0, "correlations": 1.0}


class TestProcrustes(MetricContract):
    metric_cls = Procrustes
    identity = {"procrustes": 0.0}


class TestMutualKNN(MetricContract):
    metric_cls = MutualKNN
    identity = {"mutual_knn": 1.0}


class TestMutualKNNBounded(MetricContract):
    metric_cls = MutualKNN
    metric_kwargs = {"k": 3, "max_samples": 20}  # the synthetic run has 59 samples, the compare() run 24
    identity = {"mutual_knn": 1.0, "n": 20, "samples_seen": lambda seen: seen > 20}
