"""The networks: nn.Modules built on Meta's ``sam2`` (UnSAMv2, SANSA, LoRA, the config builder).

Nothing here imports napari or Qt, and nothing reads or writes checkpoint files: weights come in as state dicts
(:func:`.unsamv2.load_unsamv2_state_dict`, :func:`.sansa.build_sansa_model`). Reading files is
:mod:`napari_granseg.loading`'s job; only the SAM 2 YAML configs are read here, to build a model.
"""
