"""The GPU worker's half of remote compute: the dask actors (:mod:`.actors`) that hold the model, the
predictor and the images, and run the same engines and calls as this machine would."""
