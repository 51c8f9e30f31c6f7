"""Build the shipped sample photos in ``samples/`` from public-domain photos that scikit-image ships.

    python scripts/make_samples.py

``samples/group.jpg``: a 1600x1000 "group photo": the astronaut (Eileen Collins, NASA, public domain) pasted eight
times at 28-240 px and -15..15 degrees onto a soft backdrop, the camera man (CC0) once. It carries EXIF with GPS
coordinates, a camera serial number and a comment, so the demo shows that deid strips them.
``samples/portrait.png``: the astronaut photo itself (one 117 px face).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import skimage.data
from PIL import Image

from deid.config import DetectConfig
from deid.detect import FaceDetector, detect_faces

OUT = Path(__file__).resolve().parents[1] / "samples"
# (x, y, face size px, angle deg) of each pasted astronaut
PLACEMENTS = [(260, 330, 240, 0), (640, 260, 150, -8), (930, 300, 110, 12), (1180, 250, 80, -15),
              (1400, 330, 56, 5), (500, 760, 44, 10), (900, 780, 34, -5), (1250, 760, 28, 0)]


def backdrop(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    base = cv2.resize(rng.uniform(60, 200, (6, 10, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    base = cv2.GaussianBlur(base, (0, 0), 40)
    grey = base.mean(axis=2, keepdims=True)
    base = grey + 0.3 * (base - grey) + rng.normal(0, 4, (h, w, 3))  # muted colours, mild sensor-like noise
    return np.clip(base, 0, 255).astype(np.uint8)


def paste(scene: np.ndarray, src: np.ndarray, box: np.ndarray, center, size: float, angle: float) -> None:
    """Paste the region around ``box`` of ``src`` so the face is ``size`` px at ``center``, with a feathered edge."""
    face = max(box[2] - box[0], box[3] - box[1])
    scale = size / face
    c = (box[:2] + box[2:]) / 2
    m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), angle, scale)
    m[:, 2] += np.asarray(center) - c
    small = src
    if scale < 0.7:  # shrink with area averaging first, so the pasted face does not alias
        small = cv2.resize(src, None, fx=scale * 1.2, fy=scale * 1.2, interpolation=cv2.INTER_AREA)
        m[:, :2] /= scale * 1.2
    h, w = scene.shape[:2]
    warped = cv2.warpAffine(small, m, (w, h), flags=cv2.INTER_LINEAR)
    mask = np.zeros(small.shape[:2], np.float32)
    k = scale * 1.2 if scale < 0.7 else 1.0
    half = 1.5 * face * k / 2
    cx, cy = c * k
    cv2.ellipse(mask, (int(cx), int(cy + 0.15 * half)), (int(half * 0.9), int(half * 1.15)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(half * 0.12, 1))
    alpha = cv2.warpAffine(mask, m, (w, h))[..., None]
    scene[:] = np.clip(scene * (1 - alpha) + warped * alpha, 0, 255).astype(np.uint8)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    astro = skimage.data.astronaut()
    camera = np.repeat(skimage.data.camera()[..., None], 3, axis=2)
    det = FaceDetector(DetectConfig(), device="cpu")
    a_box = detect_faces(astro, det)[0].box
    scene = backdrop(1000, 1600)
    for x, y, s, ang in PLACEMENTS:
        paste(scene, astro, a_box, (x, y), s, ang)
    cam = detect_faces(camera, det)
    if cam:
        paste(scene, camera, cam[0].box, (1450, 720), 90, 0)
    img = Image.fromarray(scene)
    exif = Image.Exif()
    exif[0x010F] = "SampleCam"
    exif[0x0110] = "Model X"
    exif[0xA431] = "SN-0042-SAMPLE"  # body serial number
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 5.0), 3: "E", 4: (4.0, 53.0, 40.0)})  # GPS
    img.save(OUT / "group.jpg", "JPEG", quality=92, exif=exif.tobytes(), comment=b"sample caption: names here")
    Image.fromarray(astro).save(OUT / "portrait.png")
    print(f"wrote {OUT / 'group.jpg'} ({len(detect_faces(scene, det))} faces detected) and {OUT / 'portrait.png'}")


if __name__ == "__main__":
    main()
