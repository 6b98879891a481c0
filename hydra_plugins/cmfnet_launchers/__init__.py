"""cmfnet's Hydra launcher plugins (discovered through the ``hydra_plugins`` namespace)."""
