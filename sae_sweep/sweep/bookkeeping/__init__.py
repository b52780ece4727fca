"""A sweep's records: sweep.json, jobs.md / jobs.json, and the status read from them."""
