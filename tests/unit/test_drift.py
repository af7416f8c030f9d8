"""The drift check's own KS test against scipy, and its summary and verdict on synthetic columns."""
import math

import numpy as np
import pytest

from ray_pipeline import drift
from ray_pipeline.features import INPUT_FEATURES, INSTANCE_FEATURES

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is in the dev extras (make install-dev; make test installs them)")


@pytest.mark.parametrize("n,m,shift,seed", [(40, 40, 0.0, 0), (300, 120, 0.2, 1), (500, 900, 0.0, 2),
                                            (1000, 30, 1.0, 3), (7, 300, 0.5, 4)])
def test_ks_matches_scipy(n, m, shift, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(loc=shift, size=m)
    d, p = drift.ks_2samp(a, b)
    ref = scipy_stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    # same asymptotic distribution as scipy's kstwobign; scipy's "asymp" rounds n_eff and uses kstwo, so
    # its p agrees to within a few hundredths once n_eff is not tiny
    assert p == pytest.approx(scipy_stats.kstwobign.sf(math.sqrt(n * m / (n + m)) * d), abs=1e-9)
    if n * m / (n + m) >= 20:
        assert abs(p - ref.pvalue) < 0.03


def test_ks_with_ties_and_discrete_values_matches_scipy():
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 4, size=200).astype(float), rng.integers(1, 5, size=150).astype(float)
    d, _ = drift.ks_2samp(a, b)
    assert d == pytest.approx(scipy_stats.ks_2samp(a, b).statistic, abs=1e-12)
    assert drift.ks_2samp([1.0, 1.0], [1.0]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="non-empty"):
        drift.ks_2samp([], [1.0])


@pytest.mark.parametrize("x", [0.05, 0.3, 0.7, 0.99, 1.0, 1.36, 2.5, 5.0])
def test_kolmogorov_sf_matches_scipy(x):
    assert drift.kolmogorov_sf(x) == pytest.approx(scipy_stats.kstwobign.sf(x), abs=1e-10)


def test_summary_sketch_and_verdict():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, len(INPUT_FEATURES)))
    s = drift.summarize_columns(train, INPUT_FEATURES)
    f0 = s["features"][INPUT_FEATURES[0]]
    assert s["rows"] == 5000 and f0["n"] == 5000 and len(f0["sketch"]) == drift.SKETCH
    assert f0["sketch"] == sorted(f0["sketch"]) and f0["min"] <= f0["sketch"][0]
    summary = {"candidate": s, "instance": drift.summarize_columns(rng.normal(size=(50, len(INSTANCE_FEATURES))),
                                                                     INSTANCE_FEATURES)}
    same = drift.compare(summary, rng.normal(size=(800, len(INPUT_FEATURES))),
                         rng.normal(size=(3, len(INSTANCE_FEATURES))))
    assert same["verdict"] == drift.IN_DISTRIBUTION and same["in_distribution"] and not same["flagged"]
    moved = rng.normal(size=(800, len(INPUT_FEATURES)))
    moved[:, 3] += 2.0  # one feature far from training
    moved[:, 5] += 0.05  # and one a hair off: not drift
    out = drift.compare(summary, moved, rng.normal(size=(3, len(INSTANCE_FEATURES))))
    assert out["flagged"] == [f"candidate:{INPUT_FEATURES[3]}"] and not out["in_distribution"]
    assert out["verdict"] == f"{drift.OUTSIDE}: candidate:{INPUT_FEATURES[3]}"


def test_a_feature_constant_per_instance_counts_instances_not_rows():
    """log_n is one value per instance: 500 rows of one instance are one observation, not 500."""
    rng = np.random.default_rng(1)
    j = INPUT_FEATURES.index("log_n")
    train = rng.normal(size=(2000, len(INPUT_FEATURES)))
    train[:, j] = rng.choice([3.0, 3.2, 3.4], size=2000)
    s = drift.summarize_columns(train, INPUT_FEATURES)
    s["instances"] = 60
    summary = {"candidate": s, "instance": drift.summarize_columns(rng.normal(size=(60, len(INSTANCE_FEATURES))),
                                                                     INSTANCE_FEATURES)}
    one = rng.normal(size=(500, len(INPUT_FEATURES)))
    one[:, j] = 3.6  # larger than any training instance
    inst = rng.normal(size=(1, len(INSTANCE_FEATURES)))
    by_rows = drift.compare(summary, one, inst)
    assert "candidate:log_n" in by_rows["flagged"]  # without groups: 500 "independent" rows
    grouped = drift.compare(summary, one, inst, groups=np.zeros(500, dtype=np.int64))
    row = next(r for r in grouped["features"] if r["feature"] == "log_n" and r["group"] == "candidate")
    assert row["per_instance"] and row["ks"] == 1.0 and grouped["in_distribution"]
    many = np.repeat(one[:50], 10, axis=0)  # 50 instances, all at 3.6: now it is evidence
    many[:, j] = 3.6
    grouped = drift.compare(summary, many, inst, groups=np.repeat(np.arange(50), 10))
    assert grouped["flagged"] == ["candidate:log_n"]
