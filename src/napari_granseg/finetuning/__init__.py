"""Fine-tuning UnSAMv2 on a person's own labels: the decoder side always, the image encoder where it is cheap
(Qt-free, napari-free).

Also home of the pieces the training package (``granseg_training``) shares: the loss (:mod:`.losses`), the
click simulation (:mod:`.clicks`) and which parameters train (:mod:`.params`).
Entry point: :func:`napari_granseg.finetune` (:func:`.run.finetune`).
"""
