"""Guideline-adherence audit over recorded ketamine administrations (DuckDB by default, Spark at scale)."""
