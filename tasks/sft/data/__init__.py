"""Data the project wrote for SFT: facts, borderline prompts, safe responses (YAML).

A package so that task caches see changes to these files (tasks/caching.py hashes a package's
.py and .yaml files)."""
