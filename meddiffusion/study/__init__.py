"""Blinded, randomised reader studies: design, schedule, blinding, recording and the tidy records.

``design`` (``study.json``), ``schedule`` (each reader's order), ``blinding`` (opaque copies and
the sealed key), ``log`` (hash-chained answer logs), ``session`` (what the ReaderStudy module
calls) and ``records`` (the unblinded answers the statistics read).  Pure Python, numpy and
SimpleITK: no torch, so Slicer's own Python can import it to record answers.
"""

from meddiffusion.study.design import Case, Design, Question, load_design
from meddiffusion.study.schedule import Read
from meddiffusion.study.session import Current, ReaderSession, Study

__all__ = ["Case", "Current", "Design", "Question", "Read", "ReaderSession", "Study", "load_design"]
