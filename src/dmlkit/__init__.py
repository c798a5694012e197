"""dmlkit: deep metric learning toolkit (MDR, Sharing Matters, Guided DML on one substrate)."""

from dmlkit.version import __version__

__all__ = ["__version__", "load"]


def __getattr__(name: str):
    """Lazy ``dmlkit.load`` (= `dmlkit.serve.load.load_run`), so ``import dmlkit`` stays light."""
    if name == "load":
        from dmlkit.serve.load import load_run

        return load_run
    raise AttributeError(f"module 'dmlkit' has no attribute {name!r}")
