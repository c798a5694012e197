"""Run directories for tests that only read one (reports): written directly, no training."""

import json


def fake_run(path):
    """A finished run's metrics without training: 3 epochs, a loss logged under two names."""
    path.mkdir()
    final = {"precision_at_1": 0.9, "map_at_r": 0.5}
    (path / "metrics.json").write_text(json.dumps({"untrained": final, "final": final}))
    rows = [f"{e},{1 / e},{1 / e},{0.1 * e}" for e in (1, 2, 3)]
    (path / "metrics.csv").write_text("epoch,train_loss,train_triplet,train_mdr\n"
                                      + "\n".join(rows) + "\n")
    return path
