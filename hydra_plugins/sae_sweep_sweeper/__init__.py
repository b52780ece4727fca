"""sae-sweep's Hydra sweeper. Hydra accepts plugins only from the `hydra_plugins` namespace
package, so the adapter lives here; the sweep itself is sae_sweep/sweep/lifecycle.py."""
