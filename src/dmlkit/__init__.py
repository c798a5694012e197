"""dmlkit: deep metric learning toolkit (MDR, Sharing Matters, Guided DML on one substrate)."""

__version__ = "0.1.0"
