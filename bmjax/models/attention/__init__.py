"""Multi-head (and grouped-query) self-attention.

Three layers, outermost last:
  * `attention_reference` (reference.py): a plain einsum version, the ground truth every other
    implementation is tested against.
  * `attend` (implementations.py): picks an implementation by name from `IMPLEMENTATIONS`
    ("reference", "xla", "cudnn", "ring" (ring.py), "splash" (splash.py)).
  * `Attention` (layer.py): the NNX module (projections, rotary positions, attend, output), with `KVCache`.

Every implementation takes the shapes and masks that reference.py describes and returns what the reference does.
The kernels that span devices (ring, splash) take the mesh and the logical-axis rules from the layout in force
(bmjax/models/sharding.py), never from bmjax.parallel.
"""
from bmjax.models.attention.implementations import IMPLEMENTATIONS, attend
from bmjax.models.attention.layer import Attention, KVCache, apply_rotary, attend_cached
from bmjax.models.attention.reference import MASK_VALUE, attention_reference, make_mask

__all__ = ["Attention", "IMPLEMENTATIONS", "KVCache", "MASK_VALUE", "apply_rotary", "attend", "attend_cached",
           "attention_reference", "make_mask"]
