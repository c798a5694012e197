"""dmlkit: deep metric learning toolkit (MDR, Sharing Matters, Guided DML on one substrate)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy ``dmlkit.load`` (= `dmlkit.serve.load.load_run`), so ``import dmlkit`` stays light."""
    if name == "load":
        from dmlkit.serve.load import load_run

        return load_run
    raise AttributeError(f"module 'dmlkit' has no attribute {name!r}")
