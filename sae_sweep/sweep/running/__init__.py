"""One sweep job, in the process that trains it (see sweep/__init__.py)."""
