"""Training, pseudo-labelling and evaluation tools for napari-granseg (install with the [training] extra)."""
