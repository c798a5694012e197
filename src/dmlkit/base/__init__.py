"""The bottom layer: small modules every other subpackage may import, importing nothing of
dmlkit above them (process-group collectives, distances, atomic and safe file IO, run-directory
reading)."""
