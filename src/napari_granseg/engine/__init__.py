"""napari-free inference engines (no Qt, no napari imports)."""
