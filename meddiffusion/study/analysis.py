"""``meddiff study analyze``: every statistic of a reader study, as CSV tables, PNG plots and report.md.

:func:`analyze` takes the tidy unblinded answers (:mod:`meddiffusion.study.records`) and the
study design, leaves out training cases, keeps repeated reads for intra-reader agreement
only, and writes into ``out_dir``::

    report.md           the report: one section per kind of question, tables in Markdown
    likert_summary.csv  per question and method: n, mean (95 % t CI), SD, median, counts per score
    comparisons.csv     Wilcoxon signed-rank (Holm), Friedman, cumulative-logit model rows
    agreement.csv       inter-reader kappa / ICC / alpha, intra-reader agreement on repeats
    preference.csv      Bradley–Terry scores with bootstrap intervals, wins/ties/losses
    wins.csv            win / tie / loss counts per pair of methods
    roc.csv             AUC per reader and method, and the reader average with its OR interval
    mrmc.csv            Obuchowski–Rockette test and AUC differences (method minus reference)
    *.png               Likert distributions, Bradley–Terry scores, ROC curves per question

Tables for kinds the study does not ask are written with a header only, so that a reader of
the folder (or the Slicer module) always finds the same files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from pathlib import Path

from meddiffusion.files import atomic_write
from meddiffusion.study import plots, report, samplesize
from meddiffusion.study.stats import agreement, likert, mrmc, preference, roc
from meddiffusion.study.stats.common import analysable, by_question, label

TABLES = ("likert_summary", "comparisons", "agreement", "preference", "wins", "roc", "mrmc")


def analyze(records: list[dict], design, out_dir: Path, n_boot: int = 1000, seed: int = 0) -> dict:
    """Write the report of a study into ``out_dir``; returns headline figures and the paths written.

    ``design``: the study design (a :class:`meddiffusion.study.design.Design` or its JSON dict).
    ``n_boot``/``seed``: bootstrap resamples of the Bradley–Terry intervals and their seed.
    """
    design = dataclasses.asdict(design) if dataclasses.is_dataclass(design) else dict(design)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scales = {q["id"]: len(q.get("scale") or []) or None for q in design.get("questions", [])}
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}
    figures: dict[str, dict[str, Path]] = {"likert": {}, "pairwise": {}, "diagnostic": {}}  # kind → question → PNG
    notes: list[str] = []
    headline: dict = {"answers": len(records), "training_answers": sum(bool(r.get("training")) for r in records),
                      "repeat_answers": sum(bool(r.get("repeat")) and not r.get("training") for r in records),
                      "readers": len({r["reader"] for r in records}),
                      "cases": len({r["case"] for r in analysable(records)})}

    scored = analysable(records, "likert")
    if scored:
        tables["likert_summary"] = likert.summarise(scored, scales)
        tables["comparisons"] = likert.compare(scored) + [
            {"test": "cumulative logit", **row} for row in likert.ordinal(scored)]
        for question, rows in by_question(tables["likert_summary"]).items():
            figures["likert"][question] = plots.likert_distribution(rows, label(rows),
                                                                    out_dir / f"likert_{_slug(question)}.png")
        headline["likert"] = {q: max(rows, key=lambda r: r["mean"])["method"]
                              for q, rows in by_question(tables["likert_summary"]).items()}
    tables["agreement"] = agreement.inter_reader(scored, scales) + agreement.intra_reader(
        analysable(records, repeats=True), scales)

    pairs = analysable(records, "pairwise")
    if pairs:
        tables["wins"] = preference.win_table(pairs)
        tables["preference"] = preference.bradley_terry(pairs, n_boot=n_boot, seed=seed)
        _add_totals(tables["preference"], tables["wins"])
        for question, rows in by_question(tables["preference"]).items():
            figures["pairwise"][question] = plots.bradley_terry(rows, label(rows),
                                                                out_dir / f"preference_{_slug(question)}.png")
        headline["preference"] = {q: [r["method"] for r in sorted(rows, key=lambda r: r["rank"])]
                                  for q, rows in by_question(tables["preference"]).items()}

    for question, group in by_question(analysable(records, "diagnostic")).items():
        figure = _diagnostic(question, group, tables, notes, headline, out_dir)
        if figure is not None:
            figures["diagnostic"][question] = figure

    planning = samplesize.planning_lines(tables["comparisons"], tables["mrmc"])
    headline["sample_size"] = planning
    files = {name: _write_csv(out_dir / f"{name}.csv", rows) for name, rows in tables.items()}
    text = report.markdown(design.get("title") or "", headline, tables, figures, planning, notes, out_dir)
    files["report"] = atomic_write(out_dir / "report.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    written = {name: str(path) for name, path in files.items()}
    written.update({f"figure_{p.stem}": str(p) for paths in figures.values() for p in paths.values()})
    return {"files": written, "headline": headline, "summary": report.summary(headline, out_dir)}


def _diagnostic(question: str, group: list[dict], tables: dict, notes: list[str], headline: dict,
                out_dir: Path) -> Path | None:
    """ROC rows, the OR analysis and a ROC figure of one diagnostic question (None: not analysable)."""
    if any(r.get("truth") is None for r in group):
        notes.append(f"Diagnostic question '{question}': some cases have no truth in the key; no ROC analysis.")
        return None
    data = roc.rating_array(group)
    if data["dropped_cases"]:
        notes.append(f"Diagnostic question '{question}': {data['dropped_cases']} case(s) not read by every reader "
                     "under every method were left out of the ROC analysis (it needs the fully crossed design).")
    if min(data["truth"].sum(), (1 - data["truth"]).sum()) < 2 or len(data["readers"]) < 2:
        notes.append(f"Diagnostic question '{question}': the ROC analysis needs two positive and two negative "
                     "cases read by every reader under every method, and at least two readers.")
        return None
    result = mrmc.obuchowski_rockette(data["ratings"], data["truth"])
    methods, base = data["methods"], {"question": question, "criterion": label(group)}
    for m, method in enumerate(methods):
        tables["roc"] += [{**base, "method": method, "reader": reader, "auc": float(result["aucs"][m, j])}
                          for j, reader in enumerate(data["readers"])]
        single = result["single"][m]
        tables["roc"].append({**base, "method": method, "reader": "mean", "auc": single["auc"], "se": single["se"],
                              "df": single["df"], "ci_low": single["ci_low"], "ci_high": single["ci_high"]})
    counts = {"n_readers": len(data["readers"]), "n_cases": len(data["cases"]), "n_positive": int(data["truth"].sum())}
    components = {k: result[k] for k in ("var", "cov1", "cov2", "cov3", "var_r", "var_tr")}
    if len(methods) > 1:
        tables["mrmc"].append({**base, "comparison": "all methods equal", "f": result["f"], "ndf": result["ndf"],
                               "ddf": result["ddf"], "p": result["p"], "ms_t": result["ms_t"],
                               "ms_tr": result["ms_tr"], "chi2_fixed_readers": result["chi2_fixed_readers"],
                               "p_fixed_readers": result["p_fixed_readers"], **components, **counts})
        for d in result["differences"]:  # OR's convention is first − second; the report shows second − first
            tables["mrmc"].append({**base, "comparison": "difference", "first": methods[d["first"]],
                                   "second": methods[d["second"]], "difference": -d["difference"], "se": d["se"],
                                   "ddf": d["df"], "p": d["p"],
                                   "ci_low": -d["ci_high"], "ci_high": -d["ci_low"], **components, **counts})
        headline.setdefault("mrmc", {})[question] = {
            "aucs": dict(zip(methods, result["method_aucs"])), "f": result["f"], "ddf": result["ddf"], "p": result["p"]}
    return plots.roc_curves(data, result["method_aucs"], label(group), out_dir / f"roc_{_slug(question)}.png")


def _add_totals(scores: list[dict], wins: list[dict]) -> None:
    """Each method's wins, ties and losses over all its pairs, added to its Bradley–Terry row."""
    for row in scores:
        mine = [w for w in wins if w["question"] == row["question"] and row["method"] in (w["first"], w["second"])]
        row["wins"] = sum(w["first_wins"] if w["first"] == row["method"] else w["second_wins"] for w in mine)
        row["ties"] = sum(w["ties"] for w in mine)
        row["losses"] = sum(w["second_wins"] if w["first"] == row["method"] else w["first_wins"] for w in mine)


def _slug(text: str) -> str:
    """A file-name-safe form of a question id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "question"


def _write_csv(path: Path, rows: list[dict]) -> Path:
    """Rows as CSV with the union of their keys as columns (first-seen order); empty: header only."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns) or ["question"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8"))
