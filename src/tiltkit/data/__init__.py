"""Data sets: toy 2-D sets and user point files."""

from .toy import TOY_SETS, gauss25_centres, load_points, toy_split

__all__ = ["TOY_SETS", "gauss25_centres", "load_points", "toy_split"]
