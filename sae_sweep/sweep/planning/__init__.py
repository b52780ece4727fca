"""What a sweep launches: the grid, its packs, and the target-L0 rounds (see sweep/__init__.py)."""
