"""Stain normalisation of an image before its crops are cut (``CropSpec.stain_normalisation``).

Macenko et al. (ISBI 2009): a source's two stain vectors (haematoxylin and eosin) are estimated from its
tissue pixels in optical-density space, its stain amounts are rescaled to a reference's, and its images are
rebuilt with the reference's stain vectors. A slide from another scanner or lab then reaches the network in
the colours of the reference, instead of the network having to have seen such colours in training (which
HED stain jitter, ``augment.stain``, tries instead). torchstain's NumPy implementation estimates the
vectors (``fit``); its built-in reference is the original implementation's H&E vectors and amounts.

The estimate is made per *source*, not per image, wherever the caller knows the source: a training
dataset's images are normalised with one estimate made from all of them, a slide's regions with one made
from the whole slide. One small patch is a poor source: with few nuclei in it, the 99th percentile of its
haematoxylin is background, and scaling that to the reference's nuclei darkens the whole patch. A lone
image is its own source.

Applying an estimate is linear in optical density: OD' = OD @ M with one 3 x 3 matrix, then back to
intensities; a 256-entry table turns bytes into optical densities.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

METHODS = ("none", "macenko")

BACKGROUND = 240.0  # Macenko's transmitted light intensity I0
# Macenko's tissue pixels: optical density >= 0.15 in every channel, i.e.
# -log((I + 1) / 240) >= 0.15  <=>  I <= 240 * exp(-0.15) - 1 = 205.6.
TISSUE_MAX_INTENSITY = 205
# Fewer tissue pixels than this in a source and no estimate is made (about a 45 x 45 px patch of tissue).
MIN_TISSUE_PIXELS = 2000
# Tissue pixels of a source that the estimate is made from (1-2 million), drawn evenly over its images.
ESTIMATE_PIXELS = 1_000_000
_OPTICAL_DENSITY = -np.log((np.arange(256, dtype=np.float64) + 1) / BACKGROUND).astype(np.float32)


@dataclass(frozen=True)
class StainEstimate:
    """A source's stain vectors (3 x 2: haematoxylin, eosin; unit columns in optical density) and the
    99th percentile of each stain's amount."""

    vectors: np.ndarray
    max_amounts: np.ndarray


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown stain normalisation {method!r} (known: {', '.join(METHODS)})")


@lru_cache(maxsize=1)
def _reference() -> StainEstimate:
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    normaliser = NumpyMacenkoNormalizer()
    return StainEstimate(np.asarray(normaliser.HERef, np.float64), np.asarray(normaliser.maxCRef, np.float64))


def tissue_mask(image: np.ndarray) -> np.ndarray:
    """The pixels dark enough in every channel to count as stained tissue."""
    return (image <= TISSUE_MAX_INTENSITY).all(axis=-1)


def estimate_stain(images: Iterable[np.ndarray], seed: int = 0) -> StainEstimate | None:
    """The Macenko estimate of one source from its RGB uint8 images (any iterable, read once: a source may
    not fit in memory); None where they hold fewer than :data:`MIN_TISSUE_PIXELS` tissue pixels or the
    estimate fails (then normalising leaves them as they are: a wrong estimate would recolour them worse than
    none). Deterministic for a given ``seed``."""
    # Every image's tissue pixels are drawn with one probability, so each image weighs by its tissue and the
    # estimate does not depend on how a source was tiled; past 2 x ESTIMATE_PIXELS the pool and the
    # probability are halved, which keeps memory bounded whatever the source's size.
    generator = np.random.default_rng(seed)
    probability, pool, pooled, tissue_total = 1.0, [], 0, 0
    for image in images:
        tissue = image[tissue_mask(image)]
        tissue_total += len(tissue)
        drawn = tissue if probability == 1.0 else tissue[generator.random(len(tissue)) < probability]
        pool.append(drawn)
        pooled += len(drawn)
        while pooled > 2 * ESTIMATE_PIXELS:
            pool = [pixels[generator.random(len(pixels)) < 0.5] for pixels in pool]
            pooled = sum(len(pixels) for pixels in pool)
            probability /= 2
    if tissue_total < MIN_TISSUE_PIXELS:
        return None
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    normaliser = NumpyMacenkoNormalizer()
    try:
        with np.errstate(divide="raise", invalid="raise", over="ignore", under="ignore"):
            normaliser.fit(np.concatenate(pool)[:, None, :], Io=BACKGROUND)
    except (np.linalg.LinAlgError, FloatingPointError, ValueError, IndexError):
        return None
    vectors, amounts = np.asarray(normaliser.HERef, np.float64), np.asarray(normaliser.maxCRef, np.float64)
    if not (np.isfinite(vectors).all() and np.isfinite(amounts).all() and (amounts > 0).all()):
        return None
    return StainEstimate(vectors, amounts)


def normalise_stain(image: np.ndarray, method: str = "macenko", estimate: StainEstimate | None = None) -> np.ndarray:
    """The RGB uint8 image (H x W x 3) with its stains normalised by ``method`` (see :data:`METHODS`), using
    its source's ``estimate`` (made from the image alone when not given). The image itself where ``method``
    is "none" or no estimate can be made."""
    check_method(method)
    if method == "none":
        return image
    if estimate is None:
        estimate = estimate_stain([image])
        if estimate is None:
            return image
    reference = _reference()
    # OD = C @ V^T per pixel (C: the stain amounts). Amounts by least squares, C = OD @ pinv(V)^T, rescaled
    # so that the source's 99th percentiles become the reference's, then rebuilt with the reference's vectors:
    # OD' = OD @ pinv(V)^T @ diag(ref / source) @ V_ref^T.
    matrix = (np.linalg.pinv(estimate.vectors).T @ np.diag(reference.max_amounts / estimate.max_amounts)
              @ reference.vectors.T).astype(np.float32)
    density = _OPTICAL_DENSITY[image] @ matrix
    out = BACKGROUND * np.exp(-density)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
