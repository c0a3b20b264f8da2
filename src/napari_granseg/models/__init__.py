"""nn.Modules built on Meta's ``sam2``: no napari, no file I/O beyond state dicts."""
