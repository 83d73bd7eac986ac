"""peftlab: compare parameter-efficient fine-tuning methods, one Snakemake DAG, one DuckDB file."""

__version__ = "0.1.0"
