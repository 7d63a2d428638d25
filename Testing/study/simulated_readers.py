"""Simulated readers with known method effects, for the reader-study statistics tests.

Three methods: ``original`` (the reference), ``B`` (one Likert point better, preferred in
pairs, higher diagnostic AUC) and ``C`` (the same as the original in every respect).  Each
case has a latent quality shared by all its images, each reader a bias, each answer noise,
so that the paired tests, agreement and MRMC statistics see realistic correlation.
"""

from __future__ import annotations

import numpy as np

METHODS = ("original", "B", "C")
LIKERT_EFFECT = {"original": 0.0, "B": 1.0, "C": 0.0}
PREFERENCE = {"original": 0.0, "B": 1.2, "C": 0.0}
SEPARATION = {"original": 1.0, "B": 2.2, "C": 1.0}  # diagnostic: mean confidence shift of positives


def simulate(n_cases: int = 60, n_readers: int = 4, seed: int = 0, n_repeats: int = 10,
             n_training: int = 3, noise: float = 0.45) -> list[dict]:
    """Records of a study with a Likert, a pairwise and a diagnostic question on every case."""
    rng = np.random.default_rng(seed)
    readers = [f"reader{j + 1}" for j in range(n_readers)]
    bias = dict(zip(readers, rng.normal(0, 0.25, n_readers)))
    records: list[dict] = []
    for k in range(n_cases + n_training):
        case, training = f"case{k:03d}", k >= n_cases
        quality, truth, difficulty = rng.normal(0, 0.7), int(rng.random() < 0.4), rng.normal(0, 0.5)
        for reader in readers:
            reads = [False] + [True] * (k < n_repeats)
            for repeat in reads:
                base = {"reader": reader, "case": case, "patient": f"p{k:03d}", "session": 1 + repeat,
                        "repeat": repeat, "training": training, "seconds": float(rng.uniform(5, 30))}
                for method in METHODS:
                    latent = 3 + quality + LIKERT_EFFECT[method] + bias[reader] + rng.normal(0, noise)
                    answer = 1 if training else int(np.clip(np.rint(latent), 1, 5))
                    records.append({**base, "question": "noise", "kind": "likert", "criterion": "noise",
                                    "method": method, "left": None, "right": None, "answer": answer, "truth": None})
                    confidence = truth * SEPARATION[method] + difficulty + rng.normal(0, 1)
                    records.append({**base, "question": "lesion", "kind": "diagnostic", "criterion": "lesion",
                                    "method": method, "left": None, "right": None, "answer": float(confidence),
                                    "truth": truth})
                for a, b in (("original", "B"), ("original", "C"), ("B", "C")):
                    left, right = (a, b) if rng.random() < 0.5 else (b, a)
                    d = PREFERENCE[left] - PREFERENCE[right] + rng.normal(0, 0.8)
                    answer = "equal" if abs(d) < 0.4 else ("left" if d > 0 else "right")
                    records.append({**base, "question": "overall", "kind": "pairwise", "criterion": "overall",
                                    "method": None, "left": left, "right": right, "answer": answer, "truth": None})
    return records


DESIGN = {
    "title": "Simulated study",
    "questions": [
        {"id": "noise", "kind": "likert", "text": "Image noise", "criterion": "noise"},
        {"id": "overall", "kind": "pairwise", "text": "Which image is better?", "criterion": "overall"},
        {"id": "lesion", "kind": "diagnostic", "text": "Lesion present?", "criterion": "lesion"},
    ],
}
