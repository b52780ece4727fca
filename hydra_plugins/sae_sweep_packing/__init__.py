"""sae-sweep's Hydra sweeper. Hydra accepts plugins only from the `hydra_plugins` namespace
package, so the class lives here; its logic is in sae_sweep/sweep/ (packing.py, threads.py)."""
