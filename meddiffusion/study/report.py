"""report.md of a reader study: one section per kind of question, Markdown tables, the plots.

Only formatting lives here; every number comes from :mod:`meddiffusion.study.analysis`'s
tables, which are also written as CSV, so the report and the CSVs cannot disagree.
"""

from __future__ import annotations

import math
from pathlib import Path

from meddiffusion.study.stats.common import by_question

METHODS = """\
Training cases are left out of every analysis; repeated reads are used only for intra-reader
agreement.  Likert: per-method mean with a 95 % t interval; paired Wilcoxon signed-rank tests
on case means over readers, Holm-adjusted within a question; Friedman test across three or more
methods; a cumulative-logit (proportional-odds) model with method and reader as fixed effects
(statsmodels OrderedModel; method only where that does not converge).  Agreement: quadratic-
weighted Cohen's kappa per reader pair, ICC(2,1) (pingouin), Krippendorff's ordinal alpha;
intra-reader kappa on repeated reads.  Preference: Bradley–Terry scores (choix; a tie counts as
half a win each way) with percentile-bootstrap intervals over cases.  Diagnostic accuracy:
empirical (trapezoidal) AUC per reader and method; Obuchowski–Rockette analysis with jackknife
covariances and Hillis's (2007) denominator degrees of freedom (random readers and cases).
Sample size: Hillis, Obuchowski & Berbaum (2011) for AUC; paired t-test size over the Wilcoxon
efficiency 3/π for Likert scores.
"""


def number(value, key: str = "") -> str:
    """A table cell: p-values as ``<0.001``, other floats to 3 decimals, missing as ``–``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if key.startswith("p") and value < 0.001:
            return "<0.001"
        return f"{value:.3f}"
    return str(value)


def interval(row: dict, key: str) -> str:
    """``estimate [low, high]`` of a row with ``ci_low``/``ci_high``."""
    if row.get("ci_low") is None:
        return number(row.get(key))
    return f"{number(row.get(key))} [{number(row['ci_low'])}, {number(row['ci_high'])}]"


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of ``rows``; ``columns`` are (key, header), a key ``x±`` shows ``x`` with its CI."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [interval(row, k[:-1]) if k.endswith("±") else number(row.get(k), k) for k, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(figures: dict[str, Path], question: str, out_dir: Path) -> list[str]:
    """The Markdown image of a question's figure, if it has one."""
    path = figures.get(question)
    return [f"![{path.stem}]({path.relative_to(out_dir).as_posix()})"] if path else []


def _likert(tables: dict, figures: dict[str, Path], out_dir: Path) -> list[str]:
    out = ["## Likert scores"]
    comparisons = by_question(tables["comparisons"])
    for question, rows in by_question(tables["likert_summary"]).items():
        counts = [(k, f"n({k[2:]})") for k in rows[0] if k.startswith("n_")]
        out += [f"### {rows[0]['criterion']}", table(rows, [("method", "method"), ("n", "answers"),
                ("mean±", "mean [95 % CI]"), ("sd", "SD"), ("median", "median")] + counts)]
        out += _figure(figures, question, out_dir)
        tests = [r for r in comparisons.get(question, []) if r["test"] != "cumulative logit"]
        out += ["Paired tests on case means (difference = second − first):",
                table(tests, [("test", "test"), ("first", "first"), ("second", "second"), ("n_cases", "cases"),
                              ("difference", "difference"), ("statistic", "statistic"), ("p", "p"),
                              ("p_holm", "p (Holm)")])]
        model = [r for r in comparisons.get(question, []) if r["test"] == "cumulative logit"]
        if model:
            out += [f"Cumulative-logit model ({model[0]['model']}); log odds of a higher score than "
                    f"{model[0]['reference']}:",
                    table([r for r in model if r.get("method")],
                          [("method", "method"), ("log_odds±", "log odds [95 % CI]"), ("p", "p")])]
    return out


def _agreement(rows: list[dict]) -> list[str]:
    columns = [("criterion", "question"), ("statistic", "statistic"), ("readers", "readers"),
               ("value±", "value [95 % CI]"), ("n", "items")]
    out = ["## Agreement"]
    for kind, title in (("inter-reader", "Between readers (first reads)"), ("intra-reader", "Repeated reads")):
        chosen = [r for r in rows if r["kind"] == kind]
        if chosen:
            out += [f"### {title}", table(chosen, columns)]
    return out


def _preference(tables: dict, figures: dict[str, Path], out_dir: Path) -> list[str]:
    out = ["## Pairwise preference"]
    wins = by_question(tables["wins"])
    for question, rows in by_question(tables["preference"]).items():
        out += [f"### {rows[0]['criterion']}",
                table(sorted(rows, key=lambda r: r["rank"]), [
                    ("rank", "rank"), ("method", "method"), ("score±", "Bradley–Terry score [95 % CI]"),
                    ("p_vs_reference", "P(preferred to reference)"), ("wins", "wins"), ("ties", "ties"),
                    ("losses", "losses")])]
        out += _figure(figures, question, out_dir)
        out += [table(wins.get(question, []), [("first", "first"), ("second", "second"),
                                               ("first_wins", "first preferred"), ("ties", "equal"),
                                               ("second_wins", "second preferred")])]
    return out


def _diagnostic(tables: dict, figures: dict[str, Path], out_dir: Path) -> list[str]:
    out = ["## Diagnostic accuracy (ROC)"]
    tests = by_question(tables["mrmc"])
    for question, rows in by_question(tables["roc"]).items():
        out += [f"### {rows[0]['criterion']}", table(rows, [("method", "method"), ("reader", "reader"),
                                                              ("auc±", "AUC [95 % CI]")])]
        out += _figure(figures, question, out_dir)
        for row in tests.get(question, []):
            if row["comparison"] != "difference":
                out.append(f"Obuchowski–Rockette test of equal AUCs ({row['n_readers']} readers, {row['n_cases']} "
                           f"cases, random readers and cases): F({row['ndf']}, {row['ddf']:.2f}) = {row['f']:.3f}, "
                           f"p = {number(row['p'], 'p')}.")
        differences = [r for r in tests.get(question, []) if r["comparison"] == "difference"]
        if differences:
            out.append(table(differences, [("second", "method"), ("first", "minus"),
                                           ("difference±", "AUC difference [95 % CI]"), ("ddf", "df"), ("p", "p")]))
    return out


def markdown(title: str, headline: dict, tables: dict, figures: dict, planning: list[str], notes: list[str],
             out_dir: Path) -> str:
    """The whole report."""
    parts = [f"# {title}: reader study report" if title else "# Reader study report",
             f"{headline['readers']} readers, {headline['cases']} cases, {headline['answers']} answers "
             f"({headline['training_answers']} on training cases, left out; {headline['repeat_answers']} repeated "
             "reads, used for intra-reader agreement only)."]
    if tables["likert_summary"]:
        parts += _likert(tables, figures["likert"], out_dir)
    if tables["agreement"]:
        parts += _agreement(tables["agreement"])
    if tables["preference"]:
        parts += _preference(tables, figures["pairwise"], out_dir)
    if tables["roc"]:
        parts += _diagnostic(tables, figures["diagnostic"], out_dir)
    if planning:
        parts += ["## Planning the next study (sample size)", "\n".join(f"- {line}" for line in planning)]
    if notes:
        parts += ["## Notes", "\n".join(f"- {line}" for line in notes)]
    parts += ["## Methods", METHODS]
    return "\n\n".join(parts) + "\n"


def summary(headline: dict, out_dir: Path) -> str:
    """A few lines for the command line: what is best where, the MRMC result, where the report is."""
    lines = [f"{question}: best mean score {method}" for question, method in headline.get("likert", {}).items()]
    lines += [f"{question}: preferred order {' > '.join(order)}"
              for question, order in headline.get("preference", {}).items()]
    for question, result in headline.get("mrmc", {}).items():
        aucs = ", ".join(f"{m} {a:.3f}" for m, a in result["aucs"].items())
        lines.append(f"{question}: AUC {aucs}; OR F = {result['f']:.2f} (df {result['ddf']:.1f}), "
                     f"p = {number(result['p'], 'p')}")
    lines += headline.get("sample_size", [])[:2]
    return "\n".join(lines + [f"report -> {out_dir / 'report.md'}"])
