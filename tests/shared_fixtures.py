"""Location of the real SpeakingFaces fixtures in ``../shared`` (beside the checkout), if present."""

from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "speakingfaces-real"


def real_image(name: str) -> np.ndarray:
    """An RGB fixture image, or a skip naming the missing folder (only where ../shared is absent)."""
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"real SpeakingFaces fixtures not available: {path} is absent (../shared not beside the checkout)")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
