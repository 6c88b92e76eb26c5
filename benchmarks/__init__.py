"""The benchmarks: each writes its figures as JSON under docs/results/, and `python benchmarks/render.py`
turns those files into the tables of docs/results.md. Run them from the repository root as modules
(`python -m benchmarks.report ...`); each module's docstring starts with its command."""
