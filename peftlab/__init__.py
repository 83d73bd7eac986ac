"""peftlab: compare parameter-efficient fine-tuning methods, one Snakemake DAG, one DuckDB file."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # load_run imports torch and transformers: only on first use, so that planning a workflow (which imports
    # peftlab) stays free of them
    if name in ("load_run", "TrainedRun"):
        from peftlab import reuse

        return getattr(reuse, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
