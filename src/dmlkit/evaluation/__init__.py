"""Retrieval evaluation: exact chunked kNN, PML-identical metrics, NMI/AMI, embedding files."""

from dmlkit.evaluation.embeddings_io import load_embeddings
from dmlkit.evaluation.evaluator import (
    METRICS,
    PML_KEYS,
    Evaluator,
    concatenate_normalized,
    evaluate,
    pml_named,
)

__all__ = [
    "METRICS",
    "PML_KEYS",
    "Evaluator",
    "concatenate_normalized",
    "evaluate",
    "load_embeddings",
    "pml_named",
]
