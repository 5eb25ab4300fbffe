"""Gearman workers (the stage worker) and the loader."""
