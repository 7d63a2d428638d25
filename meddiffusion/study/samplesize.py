"""How many cases a planned reader study needs, from the variance seen in a pilot.

Diagnostic (MRMC) studies: the power of the Obuchowski–Rockette test for two methods with
random readers and cases, after Hillis, Obuchowski & Berbaum (2011) Acad Radiol 18:129–142,
eq. 10.  The pilot's error variance and covariances scale with K*/K (K* pilot cases, K planned
cases); Var(T×R) does not.  The same formulas give RJafroc's ``SsPowerGivenJK`` (the test
reproduces its Van Dyke value).

Likert comparisons of two methods on the same cases: the paired t-test sample size (noncentral t)
divided by 3/π, the asymptotic relative efficiency of the Wilcoxon signed-rank test under
normality (Noether's adjustment), rounded up.
"""

from __future__ import annotations

import math

from scipy import stats

#: the defaults of most protocols: two-sided 5 % test, 80 % power
ALPHA, POWER = 0.05, 0.80
#: effects planned for when the study saw (almost) none: half a Likert point, 0.05 in AUC
LIKERT_EFFECT, AUC_EFFECT = 0.5, 0.05


def or_power(effect: float, readers: int, cases: int, pilot_cases: int, var_tr: float, var: float,
             cov1: float, cov2: float, cov3: float, alpha: float = ALPHA) -> float:
    """Power to detect an AUC difference ``effect`` with ``readers`` readers and ``cases`` cases."""
    scale = pilot_cases / cases
    var_tr = max(var_tr, 0.0)
    spread = max(cov2 - cov3, 0.0)
    den = var_tr + scale * (var - cov1 + (readers - 1) * spread)
    ddf = den ** 2 / ((var_tr + scale * (var - cov1 - spread)) ** 2 / (readers - 1))
    noncentrality = effect ** 2 * readers / 2 / den
    return float(stats.ncf.sf(stats.f.ppf(1 - alpha, 1, ddf), 1, ddf, noncentrality))


def or_cases(effect: float, readers: int, pilot_cases: int, components: dict, power: float = POWER,
             alpha: float = ALPHA, max_cases: int = 100_000) -> int | None:
    """Fewest cases giving ``power`` (None if even ``max_cases`` do not: too few readers).

    ``components``: ``var_tr``, ``var``, ``cov1``, ``cov2``, ``cov3`` of the pilot (as
    :func:`meddiffusion.study.stats.mrmc.or_test` returns them).  Power rises with the number
    of cases, so a bisection finds the smallest.
    """
    keys = ("var_tr", "var", "cov1", "cov2", "cov3")
    return _smallest(lambda k: or_power(effect, readers, k, pilot_cases, *(components[key] for key in keys),
                                        alpha=alpha) >= power, max_cases)


def _smallest(enough, high: int) -> int | None:
    """The smallest n in 2..high with ``enough(n)`` for a criterion that stays true once true."""
    if not enough(high):
        return None
    low = 1  # enough(high) holds; enough(low) is taken as false
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def paired_t_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test on ``n`` pairs for a standardised ``effect`` (noncentral t).

    scipy's noncentral t returns NaN far in its tails (huge effects); there the upper tail is 1
    and the lower 0, which is what this returns instead.
    """
    critical, shift = stats.t.ppf(1 - alpha / 2, n - 1), effect * math.sqrt(n)
    upper, lower = stats.nct.sf(critical, n - 1, shift), stats.nct.cdf(-critical, n - 1, shift)
    return float((1.0 if shift > critical else 0.0) if math.isnan(upper) else upper) + float(
        0.0 if math.isnan(lower) else lower)


def paired_likert_cases(difference: float, sd_difference: float, power: float = POWER,
                        alpha: float = ALPHA) -> int | None:
    """Cases for the Wilcoxon signed-rank test to detect a mean score ``difference``.

    ``sd_difference``: SD of the per-case differences of the two methods' mean scores in the
    pilot.  None when the effect is zero or the SD is not positive.  Never fewer than the
    exact test's minimum: with n cases its smallest two-sided p is 2/2ⁿ (6 cases for 5 %).
    """
    if difference == 0 or not sd_difference > 0:
        return None
    effect = abs(difference) / sd_difference
    n_t = _smallest(lambda n: paired_t_power(effect, n, alpha) >= power, 10_000_000)
    if n_t is None:
        return None
    return max(math.ceil(n_t / (3 / math.pi)), math.ceil(math.log2(2 / alpha)))


def planning_lines(comparisons: list[dict], mrmc_rows: list[dict]) -> list[str]:
    """The report's sample-size sentences: each method against the reference, this study as the pilot.

    ``comparisons`` and ``mrmc_rows``: the rows of :mod:`meddiffusion.study.analysis`'s
    comparisons.csv and mrmc.csv.  The observed difference is planned for; where it is
    (almost) zero, a conventional one (``LIKERT_EFFECT``, ``AUC_EFFECT``) is, and the line says so.
    """
    lines, reference = [], {}
    for row in comparisons:
        if row["test"] != "Wilcoxon signed-rank" or reference.setdefault(row["question"], row["first"]) != row["first"]:
            continue
        observed = row["difference"]
        effect = observed if abs(observed) >= 0.1 else LIKERT_EFFECT
        n = paired_likert_cases(effect, row["sd_difference"])
        aim = f"the observed difference of {observed:+.2f} points" if effect == observed else \
            f"a {LIKERT_EFFECT}-point difference (observed {observed:+.2f})"
        lines.append(f"{row['criterion']}, {row['second']} vs {row['first']}: to detect {aim} with "
                     f"{POWER:.0%} power (Wilcoxon signed-rank, two-sided {ALPHA:.0%}) a study needs "
                     + (f"about {n} cases." if n else "an SD of case differences above zero; none was seen."))
    for row in mrmc_rows:
        if "difference" not in row or reference.setdefault(("auc", row["question"]), row["first"]) != row["first"]:
            continue
        observed = row["difference"]
        effect = observed if abs(observed) >= 0.02 else AUC_EFFECT
        k = or_cases(effect, row["n_readers"], row["n_cases"], row)
        aim = f"the observed AUC difference of {observed:+.3f}" if effect == observed else \
            f"an AUC difference of {AUC_EFFECT} (observed {observed:+.3f})"
        lines.append(f"{row['criterion']}, {row['second']} vs {row['first']}: to detect {aim} with {POWER:.0%} "
                     f"power (Obuchowski–Rockette, random readers and cases), {row['n_readers']} readers "
                     + (f"need about {k} cases" if k else "are not enough at any number of cases")
                     + f" (Hillis et al. 2011; this study's {row['n_cases']} cases as the pilot).")
    return lines
