"""Obuchowski–Rockette (OR) multi-reader multi-case analysis of AUCs, readers and cases random.

Two stages, tested separately:

1. :func:`jackknife_covariance`: the covariance of the method × reader AUCs over cases, from
   leaving out one case at a time, summarised as the OR error variance ``var`` and the
   covariances ``cov1`` (same reader, different methods), ``cov2`` (different readers, same
   method) and ``cov3`` (different readers and methods).
2. :func:`or_test`: from the AUCs and those four numbers, the OR F test of equal method AUCs
   with Hillis's (2007) denominator degrees of freedom, confidence intervals for every method
   difference and for each method's AUC, the fixed-reader chi-square test, and the variance
   components Var(R), Var(T×R) that a sample-size estimate for a new study needs.

Formulas: Obuchowski & Rockette (1995); Hillis, Obuchowski, Schartz & Berbaum (2005);
Hillis (2007) Stat Med 26:596–619; as printed in the output of OR-DBM MRMC 2.5.  Both stages
reproduce that program's analysis of the Van Dyke et al. (1993) data (see the tests).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy import stats

from meddiffusion.study.stats.roc import auc_array


def leave_one_out_aucs(ratings: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """AUCs without case k, shape ``[case, method·reader]``, from one comparison matrix per reading.

    Leaving out a positive case removes its row of the Mann–Whitney kernel, a negative case
    its column, so every jackknife AUC follows from the row and column sums (O(n₊n₋) per
    reading instead of O(K·n₊n₋)).
    """
    truth = np.asarray(truth).astype(bool)
    flat = ratings.reshape(-1, ratings.shape[-1])
    pos, neg = flat[:, truth], flat[:, ~truth]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    n_pos, n_neg = truth.sum(), (~truth).sum()
    total = psi.sum(axis=(1, 2))
    theta = np.empty((len(truth), flat.shape[0]))
    theta[truth] = ((total[:, None] - psi.sum(axis=2)) / ((n_pos - 1) * n_neg)).T
    theta[~truth] = ((total[:, None] - psi.sum(axis=1)) / (n_pos * (n_neg - 1))).T
    return theta


def jackknife_covariance(ratings: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Jackknife covariance of the ``[method, reader]`` AUCs: shape ``[t·r, t·r]``, method-major.

    cov = (K − 1)/K · Σ_k (θ₍ₖ₎ − θ̄)(θ₍ₖ₎ − θ̄)ᵀ, with θ₍ₖ₎ the AUCs without case k.
    """
    theta = leave_one_out_aucs(ratings, truth)
    centred = theta - theta.mean(axis=0)
    n_cases = theta.shape[0]
    return (n_cases - 1) / n_cases * centred.T @ centred


def covariance_components(cov: np.ndarray, n_methods: int) -> dict[str, float]:
    """Var, Cov1, Cov2, Cov3: averages of the matching entries of the AUC covariance matrix."""
    n = cov.shape[0]
    method, reader = np.divmod(np.arange(n), n // n_methods)
    same_m, same_r = method[:, None] == method[None, :], reader[:, None] == reader[None, :]
    pick = {"var": same_m & same_r, "cov1": ~same_m & same_r, "cov2": same_m & ~same_r, "cov3": ~same_m & ~same_r}
    return {name: float(cov[mask].mean()) if mask.any() else 0.0 for name, mask in pick.items()}


def or_test(aucs: np.ndarray, var: float, cov1: float, cov2: float, cov3: float,
            cov2_per_method: list[float] | None = None, var_per_method: list[float] | None = None,
            alpha: float = 0.05) -> dict:
    """OR analysis of ``aucs[method, reader]`` given the error (co)variances.

    Random readers and cases: F = MS(T) / [MS(T×R) + r·max(Cov2 − Cov3, 0)] on (t − 1, ddf_H)
    degrees of freedom, ddf_H = [MS(T×R) + r·max(Cov2 − Cov3, 0)]² / {MS(T×R)² / [(t − 1)(r − 1)]}.
    Per-method intervals use that method's MS(R) and Cov2 (``cov2_per_method``) when given.
    Degenerate data (readers in perfect agreement: MS(T×R) = 0) give infinite or NaN entries,
    not an exception, so that an interim report still appears.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return _or_test(aucs, var, cov1, cov2, cov3, cov2_per_method, var_per_method, alpha)


def _or_test(aucs, var, cov1, cov2, cov3, cov2_per_method, var_per_method, alpha) -> dict:
    t, r = aucs.shape
    means = aucs.mean(axis=1)
    grand = aucs.mean()
    ms_t = r * ((means - grand) ** 2).sum() / (t - 1) if t > 1 else float("nan")
    ms_r = t * ((aucs.mean(axis=0) - grand) ** 2).sum() / (r - 1)
    resid = aucs - means[:, None] - aucs.mean(axis=0)[None, :] + grand
    ms_tr = (resid ** 2).sum() / ((t - 1) * (r - 1)) if t > 1 else float("nan")
    var_tr = ms_tr - var + cov1 + cov2 - cov3 if t > 1 else float("nan")
    out = {"method_aucs": means.tolist(), "ms_t": ms_t, "ms_r": ms_r, "ms_tr": ms_tr,
           "var": var, "cov1": cov1, "cov2": cov2, "cov3": cov3, "var_tr": var_tr,
           "var_r": (ms_r - var_tr - var - (t - 1) * cov1 + cov2 + (t - 1) * cov3) / t}
    if t > 1:
        error = ms_tr + r * max(cov2 - cov3, 0.0)
        ddf = error ** 2 / (ms_tr ** 2 / ((t - 1) * (r - 1)))
        f = ms_t / error
        se = np.sqrt(2 / r * error)
        q = stats.t.ppf(1 - alpha / 2, ddf)
        fixed_error = var - cov1 + (r - 1) * max(cov2 - cov3, 0.0)
        x2 = (t - 1) * ms_t / fixed_error
        out.update({
            "f": f, "ndf": t - 1, "ddf": ddf, "p": float(stats.f.sf(f, t - 1, ddf)), "error_term": error,
            "chi2_fixed_readers": x2, "p_fixed_readers": float(stats.chi2.sf(x2, t - 1)),
            "differences": [
                {"first": i, "second": j, "difference": float(d), "se": float(se), "df": float(ddf),
                 "t": float(d / se), "p": float(2 * stats.t.sf(abs(d) / se, ddf)),
                 "ci_low": float(d - q * se), "ci_high": float(d + q * se)}
                for i, j in combinations(range(t), 2) for d in [means[i] - means[j]]
            ],
        })
    singles = []
    for i in range(t):
        ms_ri = ((aucs[i] - means[i]) ** 2).sum() / (r - 1)
        c2 = max(cov2_per_method[i], 0.0) if cov2_per_method is not None else max(cov2, 0.0)
        error_i = ms_ri + r * c2
        df_i = error_i ** 2 / (ms_ri ** 2 / (r - 1)) if ms_ri > 0 else float("inf")
        se_i = np.sqrt(error_i / r)
        half = stats.t.ppf(1 - alpha / 2, df_i) * se_i
        singles.append({"auc": float(means[i]), "se": float(se_i), "df": float(df_i),
                        "ci_low": float(means[i] - half), "ci_high": float(means[i] + half),
                        **({"var": var_per_method[i]} if var_per_method is not None else {})})
    out["single"] = singles
    return out


def obuchowski_rockette(ratings: np.ndarray, truth: np.ndarray, alpha: float = 0.05) -> dict:
    """The whole analysis from ``ratings[method, reader, case]`` and ``truth[case]``; adds ``aucs``."""
    aucs = auc_array(ratings, truth)
    t, r = aucs.shape
    cov = jackknife_covariance(ratings, truth)
    per_method = [covariance_components(cov[i * r:(i + 1) * r, i * r:(i + 1) * r], 1) for i in range(t)]
    result = or_test(aucs, **covariance_components(cov, t), alpha=alpha,
                     cov2_per_method=[c["cov2"] for c in per_method], var_per_method=[c["var"] for c in per_method])
    result["aucs"] = aucs
    return result
