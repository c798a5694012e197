"""Retrieval evaluation: exact chunked kNN, PML-identical metrics, NMI/AMI, embedding files."""

from dmlkit.evaluation.embeddings_io import load_embeddings
from dmlkit.evaluation.evaluator import METRICS, Evaluator, concatenate_normalized, evaluate

__all__ = ["METRICS", "Evaluator", "concatenate_normalized", "evaluate", "load_embeddings"]
