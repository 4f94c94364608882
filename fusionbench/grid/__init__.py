"""Grids of experiments: ``spec`` expands a grid file into cells (config only, no torch);
``runner`` runs the cells through a launcher, records every attempt and resumes interrupted ones."""

from fusionbench.grid.spec import Cell, Grid, cell_name, config_hash, expand, is_grid_file, load_grid

__all__ = ["Cell", "Grid", "cell_name", "config_hash", "expand", "is_grid_file", "load_grid"]
