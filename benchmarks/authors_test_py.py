"""The SinoLC-1 authors' ``test.py`` procedure, re-implemented from its description (not their code).

Their inference reads the whole image into RAM, lays ``chip`` px chips at ``stride``
(the last row and column of chips flush with the image's edge), runs the network on
one chip at a time, fuses the two heads as ``softmax((o1 + o2) / 2)``, weights each
chip's probabilities 1 on a border of ``(chip - stride) / 2`` and 5 inside, sums them
into a float32 ``(classes, H, W)`` array, divides by the summed weights and writes the
argmax index.  Normalisation is ``(raw - mean) / std`` per band in the file's order.

The baseline of ``bench_engine.py --arch paraformer`` and the reference of
``tests/test_blend.py``; independent of the package's engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

Heads = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def chip_origins(size: int, chip: int, stride: int) -> list[int]:
    """test.py's chip starts along one axis: every ``stride``, then one flush with the edge."""
    return [*range(0, size - chip, stride), size - chip]


def blended_like_test_py(heads: Heads, image: np.ndarray, mean: Sequence[float], std: Sequence[float],
                  classes: int, chip: int = 224, stride: int = 112, device: str = "cpu",
                  forwards: int | None = None) -> np.ndarray:
    """The blended probabilities ``(classes, H, W)`` of a ``(bands, H, W)`` image, as test.py makes them.

    ``forwards`` (memory measurements only) runs the network on the first
    ``forwards`` chips and reuses their probabilities, in turn, for the others:
    every chip is still accumulated, so the arrays grow as in the full loop.
    """
    height, width = image.shape[1:]
    data = np.rollaxis(image, 0, 3)  # (H, W, bands), as rasterio's read is rolled in test.py
    output = np.zeros((classes, height, width), dtype=np.float32)
    counts = np.zeros((height, width), dtype=np.float32)
    kernel = np.ones((chip, chip), dtype=np.float32)
    half = (chip - stride) // 2
    kernel[half:chip - half, half:chip - half] = 5
    seen: list[np.ndarray] = []
    for n, (y, x) in enumerate((y, x) for y in chip_origins(height, chip, stride)
                               for x in chip_origins(width, chip, stride)):
        if forwards is None or n < forwards:
            img = (data[y:y + chip, x:x + chip] - np.asarray(mean)) / np.asarray(std)
            t = torch.from_numpy(np.rollaxis(img, 2, 0).astype(np.float32))[None].to(device)
            with torch.no_grad():
                o1, o2 = heads(t)
                p = torch.softmax((o1 + o2) / 2, dim=1).cpu().numpy()[0]
            seen.append(p)
        else:
            p = seen[n % len(seen)]
        output[:, y:y + chip, x:x + chip] += p * kernel
        counts[y:y + chip, x:x + chip] += kernel
    return output / counts
