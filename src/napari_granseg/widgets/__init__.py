"""napari dock widgets (Qt); the engines they drive live in napari_granseg.engine and need no napari."""
