import io

import pytest
from rich.console import Console

from dmlkit.cli.tables import header, print_metrics

ROW = {"precision_at_1": 0.5, "recall_at_2": 0.25, "recall_at_4": 0.75, "recall_at_8": 1.0,
       "r_precision": 0.125, "map_at_r": 0.0625, "nmi": 0.5, "ami": 0.25, "map_at_5": 0.375,
       "recall_at_16": 1.0}


@pytest.mark.parametrize("width", [200, 80, 40])
def test_headers_and_values_are_never_cut(width):
    out = io.StringIO()
    print_metrics(Console(file=out, width=width), {"embeddings.npz": ROW, "other": ROW}, "t")
    text = out.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    for key, value in ROW.items():
        assert header(key) in text and f"{value:.3f}" in text
    assert ("metric" in text) == (width < 100)  # transposed where the wide table does not fit
