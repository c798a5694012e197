import pytest
from scipy import stats

from dmlkit.protocol.records import record
from dmlkit.protocol.statistics import estimate, paired, seed_values, verdict


def records():
    """Two seeds of 2 fold models and their concatenation, and the untrained anchors."""
    out = []
    for seed, folds, concat in ((0, (0.1, 0.3), 0.5), (1, (0.2, 0.4), 0.7)):
        out += [record("a", "final", seed, k, {"map_at_r": v}) for k, v in enumerate(folds)]
        out.append(record("a", "final", seed, None, {"map_at_r": concat}))
        out.append(record("a", "untrained", seed, None, {"map_at_r": 0.05}))
    return out


def test_one_value_per_seed_not_per_fold_model():
    assert seed_values(records(), "a", "final", "map_at_r", "separated") == \
        pytest.approx({0: 0.2, 1: 0.3})
    assert seed_values(records(), "a", "final", "map_at_r", "concatenated") == {0: 0.5, 1: 0.7}
    assert seed_values(records(), "a", "untrained", "map_at_r", "concatenated") == \
        {0: 0.05, 1: 0.05}
    e = estimate(seed_values(records(), "a", "final", "map_at_r", "separated"))
    # n = 2 seeds, not 4 models: t(0.975, 1) = 12.7062, sd(0.2, 0.3) = 0.0707107
    assert (e.mean, e.n) == (pytest.approx(0.25), 2)
    assert e.half == pytest.approx(12.7062 * 0.0707107 / 2 ** 0.5, rel=1e-4)


def test_paired_t_test_matches_scipy_and_decides_the_verdict():
    base = {0: 0.347, 1: 0.35, 2: 0.33, 3: 0.36, 4: 0.345}
    worse = {s: v - 0.02 + 0.003 * (s % 2) for s, v in base.items()}
    c = paired(worse, base)
    assert c.p == pytest.approx(stats.ttest_rel(list(worse.values()),
                                                list(base.values())).pvalue)
    assert c.n == 5 and c.diff == pytest.approx(-0.0188) and c.verdict == "worse"
    noisy = {0: 0.36, 1: 0.33, 2: 0.34, 3: 0.35, 4: 0.35}
    assert paired(noisy, base).verdict == "no evidence"
    assert paired({0: 0.4, 9: 0.5}, base).n == 1  # only the shared seeds count
    assert paired({0: 0.4, 9: 0.5}, base).verdict == "no evidence"
    assert paired({9: 0.5}, base) is None
    assert verdict(0.01, 0.049) == "better" and verdict(0.01, 0.05) == "no evidence"
