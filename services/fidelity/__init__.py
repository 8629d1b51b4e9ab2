"""Persona fidelity: whether a model knows the person and sounds like them.

Pure scoring of generated answers against the person's own reference answers (no torch,
no model): fact recall (:mod:`.terms`), style and the transfer score (:mod:`.style`), and
hygiene (:mod:`.hygiene`).
"""

from services.fidelity.hygiene import Hygiene, hygiene, stray_tags, typical_length
from services.fidelity.style import similarity, transfer_score
from services.fidelity.terms import RecallScore, key_terms, mean_recall, recall, words

__all__ = [
    "Hygiene",
    "RecallScore",
    "hygiene",
    "key_terms",
    "mean_recall",
    "recall",
    "similarity",
    "stray_tags",
    "transfer_score",
    "typical_length",
    "words",
]
