"""UnSAMv2 pseudo-labels without human annotation (divide and conquer), written as COCO JSON per image.

Stages (UnSAMv2's pseudo-label pipeline):

1. :mod:`.divide` -- instance proposals: MaskCut-style normalised cuts on self-supervised ViT features, or
   proposals from a user-given model / folder of label images; instance and part rules.
2. :mod:`.conquer` -- per instance, iterative merging of patch clusters at cosine thresholds 0.9..0.5.
3. :mod:`.merge` -- protected NMS (instances protected), optional refinement hook, drop huge masks.
4. :mod:`.granularity` -- the granularity of each mask within its instance.
5. :mod:`.coco` -- COCO JSON with RLE plus granularity fields; :mod:`.pipeline` runs a folder, resumably.
"""
from .granularity import granularity_of_areas

__all__ = ["granularity_of_areas"]
