"""napari dock widgets (Qt); the engines they drive live in napari_granseg.engine and need no napari.

Importing this package (or one widget module) imports neither torch nor sam2 nor the engines: each widget
imports them in its first background task (:func:`._common.import_engines`), so opening napari and a widget
stays fast and the GUI thread never waits for them.
"""
