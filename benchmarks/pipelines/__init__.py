"""Pipelines the benchmarks run: importable by module name, as Dask workers import them."""
