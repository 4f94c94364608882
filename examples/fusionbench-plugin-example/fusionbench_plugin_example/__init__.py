"""An example fusionbench plugin package (see docs/plugins.md in fusionbench)."""
