"""Statistics of a reader study: Likert scores, agreement, pairwise preference, ROC and MRMC.

Each module takes the tidy, unblinded answer records of :mod:`meddiffusion.study.analysis`
(one dict per answered question) and returns plain rows (lists of dicts) that the report
writes as CSV and Markdown tables.  Libraries do the statistics where one exists (scipy,
statsmodels, pingouin, krippendorff, choix); the Obuchowski–Rockette MRMC analysis has no
Python implementation and is written here, checked against the published Van Dyke example.
"""
