"""The imaging field of an ultrasound screen: the textured region that holds the scan.

Everything else on an ultrasound screen is the machine's user interface: banners with the
patient's name, the date and the institution, parameter columns, a status bar. Blanking what lies
outside the field removes that text even where it is too small for the text detector. The field
is the bounding box of the largest textured (speckled) region: pixels that are not black and
vary locally, closed a little and then opened, so that thin strokes of text never join it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

Box = tuple[int, int, int, int]  # xyxy, half-open
_DARK = 12  # grey levels: below this, a pixel is background
_TEXTURE = 4.0  # local standard deviation (9 x 9) that counts as texture
_MIN_SHARE = 0.03  # a field smaller than this share of the image is not trusted


def imaging_field(pixels: npt.NDArray[np.uint8]) -> Box | None:
    """The xyxy box of the scan on an (H, W) or (H, W, 3) ultrasound screen, or None.

    None when no textured region covers at least 3 % of the image, or when the field is
    (nearly) the whole image and there is nothing around it to blank.
    """
    grey = (pixels.max(axis=-1) if pixels.ndim == 3 else pixels).astype(np.float64)
    mean = ndimage.uniform_filter(grey, 9)
    spread = np.sqrt(np.maximum(ndimage.uniform_filter(grey * grey, 9) - mean * mean, 0.0))
    textured = (grey > _DARK) & (spread > _TEXTURE)
    solid = ndimage.binary_opening(ndimage.binary_closing(textured, iterations=1), iterations=4)
    labels, count = ndimage.label(solid)
    if count == 0:
        return None
    sizes = np.asarray(ndimage.sum(solid, labels, range(1, count + 1)))
    largest = int(np.argmax(sizes)) + 1
    if sizes[largest - 1] < _MIN_SHARE * grey.size:
        return None
    ys, xs = np.nonzero(labels == largest)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    height, width = grey.shape
    if (box[2] - box[0]) * (box[3] - box[1]) >= 0.95 * width * height:
        return None
    return box


def blank_outside(pixels: npt.NDArray[np.uint8], box: Box) -> npt.NDArray[np.uint8]:
    """A copy of ``pixels`` with everything outside ``box`` set to 0."""
    x0, y0, x1, y1 = box
    out = np.zeros_like(pixels)
    out[y0:y1, x0:x1] = pixels[y0:y1, x0:x1]
    return out
