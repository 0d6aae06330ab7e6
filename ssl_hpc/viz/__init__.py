"""Pictures: colour composites of multi-band cutouts and grids of them."""
