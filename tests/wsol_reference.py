"""clovaai/wsolevaluation's box extraction, literally, as the reference of the box tests
(tests/eval/test_metrics.py, tests/methods/test_localization.py)."""

from __future__ import annotations

import numpy as np


def wsolevaluation_boxes(scoremap: np.ndarray, threshold: float, multi_contour_eval: bool,
                         no_contour: list[list[int]] | None = None) -> list[list[int]]:
    """``compute_bboxes_from_scoremaps`` for one ``scoremap`` in [0, 1] and one threshold.

    ``no_contour``: what a map with no contour gives (wsolevaluation: ``[[0, 0, 0, 0]]``);
    default ``[]``.
    """
    import cv2

    height, width = scoremap.shape
    scoremap_image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    _, thr = cv2.threshold(src=scoremap_image, thresh=int(threshold * np.max(scoremap_image)), maxval=255,
                           type=cv2.THRESH_BINARY)
    contours = cv2.findContours(image=thr, mode=cv2.RETR_TREE, method=cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return list(no_contour or [])
    if not multi_contour_eval:
        contours = [max(contours, key=cv2.contourArea)]
    boxes = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return boxes
