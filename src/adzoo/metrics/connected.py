"""Connected components of ground-truth masks: the "regions" that AUPRO averages over.

MVTec AD's reference evaluation labels each image's mask with ``scipy.ndimage.label`` and a 3x3
all-ones structure (8-connectivity); we do the same so AUPRO numbers are comparable with the
literature. Labelling runs on the CPU (scipy); the result goes back to the input's device.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from adzoo.metrics._tensor import as_bhw, as_bool

# 8-connectivity inside each image and none across images: labelling the whole (N, H, W) stack in one
# scipy call then gives ids that are already unique across the batch.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


def label_numpy(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Label a bool (N, H, W) array; returns int32 labels (0 = background) and the number of regions."""
    labels, n = ndimage.label(masks, structure=_STRUCTURE)
    return labels, int(n)


def region_weights(labels: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Per foreground pixel (row-major order of ``fg``), 1 / size of its region, as float64.

    Summing these over the pixels above a threshold gives the sum of per-region overlaps, which is why
    both AUPRO back-ends need nothing more per pixel.
    """
    fg_labels = labels[fg]  # sizes from the foreground only: far fewer pixels than the whole stack
    inv = 1.0 / np.maximum(np.bincount(fg_labels), 1)
    return inv[fg_labels]


def connected_components(masks: Tensor) -> tuple[Tensor, int]:
    """Label the regions of a batch of masks (8-connectivity within each image).

    Args:
        masks: (N, H, W) (or (N, 1, H, W)) bool/int/float masks; nonzero (> 0.5) is foreground.

    Returns:
        ``labels`` (N, H, W) int64 on the input's device, 0 for background and 1..n_regions for
        regions, unique across the whole batch; and ``n_regions``.
    """
    fg = as_bool(as_bhw(masks, "masks"))
    labels, n = label_numpy(fg.cpu().numpy())
    return torch.from_numpy(labels.astype(np.int64)).to(masks.device), n
