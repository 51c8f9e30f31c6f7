"""Identity swap with a tiny random generator and encoder: kept rows, determinism, keyed seeds, and the identity
guard failing closed (the dlib identity judge is real)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import assert_obscured_without_a_try

from deid.config import PhotoConfig, SwapConfig
from deid.errors import ConfigError
from deid.photo import anonymize_faces
from deid.swap import identity_seed, swap_face, swap_ws


@pytest.fixture(scope="module")
def models(tiny_swap_models):
    return tiny_swap_models


def test_kept_rows_parse():
    assert SwapConfig(keep_layers="0-3,8-9").kept_rows(10) == (0, 1, 2, 3, 8, 9)
    assert SwapConfig(keep_layers="").kept_rows(10) == ()
    assert SwapConfig(keep_layers="coarse,fine").kept_rows(10) == (0, 1, 2, 3, 8, 9)
    assert SwapConfig(keep_layers="coarse,fine").kept_rows(8) == (0, 1, 2, 3)
    with pytest.raises(ConfigError):
        SwapConfig(keep_layers="0-12").kept_rows(10)


def test_swap_ws_keeps_rows_and_is_deterministic(models):
    G = models.G
    ws = torch.randn(1, G.num_ws, G.w_dim)
    c = torch.tensor([[1.0, 0.7]])
    cfg = SwapConfig(keep_layers="0-1,7")
    a, b = swap_ws(G, ws, c, 11, cfg), swap_ws(G, ws, c, 11, cfg)
    assert torch.equal(a, b)
    assert torch.equal(a[:, [0, 1, 7]], ws[:, [0, 1, 7]])
    assert not torch.allclose(a[:, 2:7], ws[:, 2:7])
    assert not torch.equal(swap_ws(G, ws, c, 12, cfg), a)


def test_identity_seed_keyed_and_unkeyed():
    crop = np.zeros((32, 32, 3), np.uint8)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal(128)
    emb /= np.linalg.norm(emb)
    plain = SwapConfig(seed=1)
    assert identity_seed(plain, crop, emb, 0) == identity_seed(plain, crop, emb, 0)
    assert identity_seed(plain, crop, emb, 0) != identity_seed(plain, crop, emb, 1)
    assert identity_seed(plain, crop, emb, 0) != identity_seed(SwapConfig(seed=2), crop, emb, 0)
    keyed = SwapConfig(key="correct horse battery")
    other_crop = np.full((32, 32, 3), 9, np.uint8)
    # same identity, different photo (crop): same synthetic person; another key: another person
    assert identity_seed(keyed, crop, emb, 0) == identity_seed(keyed, other_crop, emb, 0)
    assert identity_seed(keyed, crop, emb, 0) != identity_seed(SwapConfig(key="another secret key"), crop, emb, 0)


def test_guard_never_returns_a_matching_face(models, astronaut, astronaut_face):
    before = astronaut.copy()
    out, res = swap_face(astronaut, astronaut_face, models, SwapConfig(max_tries=2))
    assert np.array_equal(astronaut, before)
    assert res.tries <= 2
    if res.method == "swap":
        assert res.distance >= 0.6 and res.seed >= 0
        assert 0 <= res.female_after <= 1 and res.age_after >= 0  # attributes of the anonymised face (0: a newborn)
        assert set(res.to_dict()["after"]) == {"female", "age"}
    else:
        assert res.method in ("pixelate", "solid") and res.seed == -1
        assert res.female_after is None and "after" not in res.to_dict()
    judge = models.judge
    d = judge.distance(judge.embed(astronaut, astronaut_face.box), judge.embed(out, astronaut_face.box))
    assert d == pytest.approx(res.distance, abs=1e-6)


def test_guard_falls_back_when_no_identity_is_far_enough(models, astronaut, astronaut_face):
    out, res = swap_face(astronaut, astronaut_face, models, SwapConfig(threshold=5.0, max_tries=2))
    assert res.tries == 2 and res.method in ("pixelate", "solid") and res.seed == -1
    assert res.reason == "guard" and res.to_dict()["fallback_reason"] == "guard"
    assert not np.array_equal(out, astronaut)
    assert 0 <= res.female <= 1 and res.age >= 0


@pytest.fixture(scope="module")
def cameraman(face_detector):
    """scikit-image's ``camera`` photo (public domain) as RGB, and its one face: a head turned almost to profile."""
    import skimage

    from deid.detect import detect_faces

    img = np.repeat(skimage.data.camera()[:, :, None], 3, axis=2)
    faces = detect_faces(img, face_detector)
    assert len(faces) == 1
    return img, faces[0]


def test_turn_reads_how_far_the_head_is_turned(astronaut, astronaut_face, cameraman, face_detector):
    from deid.detect import detect_faces
    from deid.types import Face

    assert abs(astronaut_face.turn) < 0.2  # a frontal portrait
    assert abs(cameraman[1].turn) > 1.0  # looking into his camera, nose past the far eye
    flipped = detect_faces(np.ascontiguousarray(cameraman[0][:, ::-1]), face_detector)[0]
    assert flipped.turn < -0.8  # mirrored: turned the other way
    eyes = [[0, 0], [10, 0]]
    for nose_x, turn in ((5, 0.0), (10, 1.0), (2.5, -0.5)):
        face = Face(np.array([-5, -5, 15, 20]), 0.99, np.array(eyes + [[nose_x, 6], [1, 12], [9, 12]]))
        assert face.turn == pytest.approx(turn)


def test_turned_heads_get_the_fallback_without_a_try(models, cameraman):
    img, face = cameraman
    out, res = swap_face(img, face, models, SwapConfig())
    assert res.method in ("pixelate", "solid") and res.reason == "turned" and res.tries == 0 and res.seed == -1
    assert res.to_dict()["fallback_reason"] == "turned" and 0 <= res.female <= 1  # attributes still reported
    x0, y0, x1, y1 = face.box.astype(int)
    assert np.abs(out[y0:y1, x0:x1].astype(int) - img[y0:y1, x0:x1]).mean() > 10  # obscured, not left
    judge = models.judge
    assert judge.distance(judge.embed(img, face.box), judge.embed(out, face.box)) == pytest.approx(res.distance, abs=1e-6)
    # the limit is the config's: above the head's turn, or 0 (no limit), the swap is tried
    for limit in (0.0, abs(face.turn) + 0.1):
        _, res = swap_face(img, face, models, SwapConfig(max_turn=limit, max_tries=1))
        assert res.tries == 1 and res.reason != "turned"
    with pytest.raises(ConfigError, match="max_turn"):
        SwapConfig(max_turn=-0.5)


def test_faces_read_as_babies_get_the_fallback_without_a_try(models, astronaut, astronaut_face):
    """A face read as younger than ``min_swap_age`` is obscured with no try ("young"); the age it was read at is
    reported. The bar is the config's: 0 swaps any age. (Here the bar is moved above the face's reading: the tiny
    models read ages at random.)"""
    _, res = swap_face(astronaut, astronaut_face, models, SwapConfig(max_tries=1))
    age = res.age
    assert res.reason != "young" or age < SwapConfig().min_swap_age
    out, res = swap_face(astronaut, astronaut_face, models, SwapConfig(min_swap_age=age + 1))
    assert_obscured_without_a_try(out, res, astronaut, astronaut_face, "young")
    assert res.age == pytest.approx(age)
    _, res = swap_face(astronaut, astronaut_face, models, SwapConfig(min_swap_age=0.0, max_tries=1))
    assert res.tries == 1 and res.reason != "young"
    with pytest.raises(ConfigError, match="min_swap_age"):
        SwapConfig(min_swap_age=-1)


def test_photo_swap_mode_reports_every_face(models, scene_720p, scene_720p_faces):
    out, outcomes = anonymize_faces(scene_720p.image, scene_720p_faces, PhotoConfig(skip=(3,)), models)
    assert [o.method == "kept" for o in outcomes] == [i == 2 for i in range(len(outcomes))]
    for o in outcomes:
        if o.method != "kept":
            assert o.swap is not None and o.method in ("swap", "pixelate", "solid")
            assert o.method != "swap" or o.swap.distance >= 0.6
    with pytest.raises(ValueError, match="SwapModels"):
        anonymize_faces(scene_720p.image, scene_720p_faces, PhotoConfig())


def test_candidates_are_ranked_by_kept_gender_and_age(models, astronaut, astronaut_face):
    """With an attribute network, candidates come back best first and the result's labels are its estimates."""
    import dataclasses

    from deid.attributes import AttributeEstimator
    from deid.nets.attributes import AttributeConfig, AttributeNet
    from deid.swap import GENDER_WEIGHT, encode_crop, face_labels, ranked_identities

    torch.manual_seed(1)
    m = dataclasses.replace(models, attributes=AttributeEstimator(AttributeNet(AttributeConfig()).eval()))
    G = m.G
    from deid.align import align_face

    aligned = align_face(astronaut, astronaut_face, G.img_resolution, G.cfg.align_template)
    ws, head = encode_crop(m, aligned.image)
    labels = face_labels(m, astronaut, astronaut_face, head)
    p, age = m.attributes.estimate_faces(astronaut, [astronaut_face])
    assert labels == pytest.approx((float(p[0]), float(age[0])))
    cfg = SwapConfig(max_tries=2, candidates=5)
    original = m.judge.embed(astronaut, astronaut_face.box)
    seeds = [identity_seed(cfg, aligned.image, original, k) for k in range(5)]  # what swap_face draws
    ranked = ranked_identities(m, ws, astronaut_face, labels, seeds, cfg)
    assert sorted(c.seed for c in ranked) == sorted(seeds)
    scores = [GENDER_WEIGHT * abs(c.female - labels[0]) + abs(c.age - labels[1]) for c in ranked]
    assert scores == sorted(scores)
    assert all(c.image.shape == (G.img_resolution, G.img_resolution, 3) for c in ranked)
    out, res = swap_face(astronaut, astronaut_face, m, cfg)
    assert res.female == pytest.approx(labels[0]) and res.age == pytest.approx(labels[1])
    if res.method == "swap":
        assert res.seed in [c.seed for c in ranked[:2]]


def test_guard_tries_escalate_to_fewer_kept_rows(models, astronaut, astronaut_face):
    from deid.align import align_face
    from deid.swap import encode_crop, guard_tries

    G = models.G
    aligned = align_face(astronaut, astronaut_face, G.img_resolution, G.cfg.align_template)
    ws, _ = encode_crop(models, aligned.image)
    cfg = SwapConfig(max_tries=4, candidates=6, keep_layers="coarse", retry_keep_layers="0-1", retry_after=2,
                     retry_mix=0)
    seeds = [11, 12, 13, 14, 15, 16]
    tries = list(guard_tries(models, ws, astronaut_face, (0.5, 30.0), seeds, cfg))
    assert len(tries) == 4 and len({c.seed for c in tries}) == 4
    assert [c.kept for c in tries] == [(0, 1, 2, 3)] * 2 + [(0, 1)] * 2
    for c in tries:
        assert torch.equal(c.ws[:, list(c.kept)], ws[:, list(c.kept)])
        assert not torch.equal(c.ws[:, 2:4], ws[:, 2:4]) or c.kept == (0, 1, 2, 3)
    assert len(list(guard_tries(models, ws, astronaut_face, (0.5, 30.0), seeds[:1], SwapConfig(max_tries=1)))) == 1


def test_retries_move_the_kept_rows_halfway_to_the_new_identity(models, astronaut, astronaut_face):
    """After retry_after tries the kept (coarse) rows, which dlib reads as the head's identity, are mixed with the
    new identity's own: half way by default; the first tries keep the original's rows exactly."""
    import dataclasses

    from deid.align import align_face
    from deid.swap import encode_crop, guard_tries, label_vector, swap_ws

    G = models.G
    aligned = align_face(astronaut, astronaut_face, G.img_resolution, G.cfg.align_template)
    ws, _ = encode_crop(models, aligned.image)
    cfg = SwapConfig(max_tries=4, retry_after=1)
    assert cfg.retry_mix == 0.5
    tries = list(guard_tries(models, ws, astronaut_face, (0.5, 30.0), [21, 22, 23, 24], cfg))
    assert [c.mix for c in tries] == [0.0, 0.5, 0.5, 0.5] and len({c.seed for c in tries}) == 4
    keep = list(cfg.kept_rows(G.num_ws))
    assert torch.equal(tries[0].ws[:, keep], ws[:, keep])
    c = label_vector(G, 0.5, 30.0)
    for cand in tries[1:]:
        own = swap_ws(G, ws, c, cand.seed, cfg, directions=models.directions, target=(0.5, 30.0), mix=1.0)
        assert torch.allclose(cand.ws[:, keep], (ws[:, keep] + own[:, keep]) / 2, atol=1e-5)
        free = [i for i in range(G.num_ws) if i not in keep]
        assert torch.equal(cand.ws[:, free], own[:, free])  # the other rows: the new identity's, as before
    # retry_mix 0 and no retry_keep_layers: every try keeps the original's rows (the behaviour before retries)
    plain = list(guard_tries(models, ws, astronaut_face, (0.5, 30.0), [21, 22, 23, 24],
                             SwapConfig(max_tries=4, retry_after=1, retry_mix=0)))
    assert all(p.mix == 0 and torch.equal(p.ws[:, keep], ws[:, keep]) for p in plain)
    # a young child gets retries too by default (the guard judges its tries in farther boxes, SwapConfig.young_age),
    # but none under a retry_min_age
    child = list(guard_tries(models, ws, astronaut_face, (0.5, 3.0), [21, 22, 23, 24], cfg))
    assert [c.mix for c in child] == [0.0, 0.5, 0.5, 0.5]
    child = list(guard_tries(models, ws, astronaut_face, (0.5, 3.0), [21, 22, 23, 24],
                             dataclasses.replace(cfg, retry_min_age=6.0)))
    assert len(child) == 4 and all(p.mix == 0 and torch.equal(p.ws[:, keep], ws[:, keep]) for p in child)
    with pytest.raises(Exception, match="retry_mix"):
        SwapConfig(retry_mix=1.5)


def test_keyed_pseudonyms_are_tried_in_seed_order(models, astronaut, astronaut_face):
    """With --key the first try is the person's keyed identity in every photo: no ranking may reorder it."""
    import dataclasses

    from deid.align import align_face
    from deid.attributes import AttributeEstimator
    from deid.nets.attributes import AttributeConfig, AttributeNet
    from deid.swap import encode_crop, guard_tries

    torch.manual_seed(2)
    m = dataclasses.replace(models, attributes=AttributeEstimator(AttributeNet(AttributeConfig()).eval()))
    aligned = align_face(astronaut, astronaut_face, m.G.img_resolution, m.G.cfg.align_template)
    ws, _ = encode_crop(m, aligned.image)
    seeds = [21, 22, 23, 24, 25, 26]
    keyed = SwapConfig(key="correct horse battery", max_tries=6, candidates=6)
    assert [c.seed for c in guard_tries(m, ws, astronaut_face, (0.5, 30.0), seeds, keyed)] == seeds
    plain = [c.seed for c in guard_tries(m, ws, astronaut_face, (0.5, 30.0), seeds, SwapConfig(max_tries=6))]
    assert sorted(plain) == seeds


class _ScriptedJudge:
    """The real judge's descriptors, but a scripted distance: the ``k``-th comparison (1-based) finds the faces far
    apart only for ``k`` in ``passing``. The guard compares the original with one try after the other, so the test
    decides which try passes. Records the batch sizes of ``embed_many``."""

    def __init__(self, judge, passing):
        self.judge, self.passing, self.batches, self.checked = judge, set(passing), [], 0

    def embed(self, image, box):
        return self.judge.embed(image, box)

    def embed_many(self, images, boxes):
        self.batches.append(len(images))
        return self.judge.embed_many(images, boxes)

    def distance(self, a, b):
        self.checked += 1
        return 1.0 if self.checked in self.passing else 0.1


@pytest.mark.parametrize("candidates", [1, 8])
def test_guard_takes_the_first_passing_try_checking_in_batches(models, astronaut, astronaut_face, candidates):
    """The guard checks the tries in doubling batches (1, 2, 4, ...) and returns the first try (in order) that the
    judge finds far enough; the report counts the tries up to it."""
    import dataclasses

    from deid.align import align_face
    from deid.swap import encode_crop, face_labels, guard_batches, guard_tries

    cfg = SwapConfig(max_tries=8, candidates=candidates, guard_jitter=0.0)  # the detection box only
    assert guard_batches(models, cfg) == [1, 2, 4, 1]
    assert guard_batches(models, SwapConfig(max_tries=16)) == [1, 2, 4, 8, 1]
    assert guard_batches(models, SwapConfig(max_tries=1)) == [1]
    judge = _ScriptedJudge(models.judge, passing={4, 6})
    m = dataclasses.replace(models, judge=judge)
    out, res = swap_face(astronaut, astronaut_face, m, cfg)
    assert res.method == "swap" and res.tries == 4 and res.distance == 1.0
    assert judge.batches == [1, 2, 4]
    # the returned seed is the 4th of the tries the guard was given
    aligned = align_face(astronaut, astronaut_face, m.G.img_resolution, m.G.cfg.align_template)
    ws, head = encode_crop(m, aligned.image)
    original = models.judge.embed(astronaut, astronaut_face.box)
    seeds = [identity_seed(cfg, aligned.image, original, k) for k in range(8)]
    tries = list(guard_tries(m, ws, astronaut_face, face_labels(m, astronaut, astronaut_face, head), seeds, cfg))
    assert res.seed == tries[3].seed
    if candidates == 1:
        assert [c.seed for c in tries] == seeds  # unranked: seed order
    # nothing passes and nothing comes near (0.1): the guard gives up after the first 7 tries, then the fallback
    judge = _ScriptedJudge(models.judge, passing=set())
    out, res = swap_face(astronaut, astronaut_face, dataclasses.replace(models, judge=judge), cfg)
    assert res.method in ("pixelate", "solid") and judge.batches == [1, 2, 4] and res.tries == 7
    # without giving up early every try is checked
    judge = _ScriptedJudge(models.judge, passing=set())
    out, res = swap_face(astronaut, astronaut_face, dataclasses.replace(models, judge=judge),
                         dataclasses.replace(cfg, hopeless=0.0))
    assert res.method in ("pixelate", "solid") and judge.batches == [1, 2, 4, 1] and res.tries == 8


def test_margin_raises_the_bar_of_the_guard(models, astronaut, astronaut_face):
    """A try at 0.62 passes the plain threshold of 0.6 but not threshold + margin 0.05: then every try fails and
    the face is obscured (the fallback check uses the same bar)."""
    import dataclasses

    class Fixed(_ScriptedJudge):
        def distance(self, a, b):
            return 0.62

    m = dataclasses.replace(models, judge=Fixed(models.judge, passing=()))
    _, res = swap_face(astronaut, astronaut_face, m, SwapConfig(max_tries=3))
    assert res.method == "swap" and res.tries == 1
    _, res = swap_face(astronaut, astronaut_face, m, SwapConfig(max_tries=3, margin=0.05))
    assert res.method == "solid" and res.tries == 3  # 0.62 < 0.65: the pixelated face counts as recognisable too
    with pytest.raises(ConfigError, match="margin"):
        SwapConfig(margin=-0.1)


def test_guard_keeps_trying_while_tries_come_near(models, astronaut, astronaut_face):
    """Tries at 0.59 (under the bar of 0.62, but within ``hopeless`` of it) keep the guard going to max_tries."""
    import dataclasses

    class Near(_ScriptedJudge):
        def distance(self, a, b):
            self.checked += 1
            return 0.59

    judge = Near(models.judge, passing=())
    _, res = swap_face(astronaut, astronaut_face, dataclasses.replace(models, judge=judge), SwapConfig(max_tries=10))
    assert res.method in ("pixelate", "solid") and res.tries == 10 and judge.batches == [1, 2, 4, 3]


@pytest.fixture(scope="module")
def shipped():
    from deid.swap import load_swap_models

    return load_swap_models()


def test_shipped_swap_steers_new_faces_to_the_originals_age(shipped, astronaut, astronaut_face):
    """The shipped generator draws the label "14-year-old girl" (with an adult's kept rows) as a woman in her late
    twenties or thirties, and "60-year-old woman" as one in her forties; steered along its directions the new faces
    read years younger / older: to the attribute network that steers, both ways, and to the independent judge on the
    blended photo, toward 60 (by at least 2 years in the median of six).

    Toward 14 the judge no longer tells: on this photo it reads no pasted face much under 26-28 (the adult hair and
    head around it), wherever along the age direction it is drawn (24 seeds, the draws moved 4 units younger: 29.7 ->
    26.0 with the 680 kimg models, 27.7 -> 27.9 with the 780 kimg ones). The judge's median of the six steered
    toward 14 was 28.7 -> 26.0 with the 680 kimg models (the test asserted a 2-year gain there until session 22), 28.3
    -> 28.6 with the 780 kimg ones (attribute network 31.3 -> 21.6); toward 60: 45.5 -> 58.9 (680 kimg), 44.5 -> 52.1
    (780 kimg; 43.9 -> 52.4 where synthesis runs in float32), 47.8 -> 51.5 (1070 kimg: its unsteered draws already
    read older, so there is less to move; the test asserted a 4-year gain until session 27). To the attribute network
    the test asked a 5-year gain in the mean toward 60 until session 29, when the 1110 kimg generator's unsteered
    draws already read 57 on average (four of six within the 10 % the steering leaves alone,
    deid.directions.AGE_TOLERANCE; 46 and 49 moved to 66 and 57): since, the steered draws' error in log-age must be
    under 0.7x the unsteered ones' and their worst smaller, as toward 14."""
    from deid.align import align_face
    from deid.eval.attributes import AttributeJudge
    from deid.swap import encode_crop, paste_synthetic, ranked_identities

    m = shipped
    assert m.directions is not None and m.attributes is not None  # both ship with the default model
    G = m.G
    aligned = align_face(astronaut, astronaut_face, G.img_resolution, G.cfg.align_template)
    ws, _ = encode_crop(m, aligned.image)
    seeds = [11, 12, 13, 14, 15, 16]
    judge = AttributeJudge.default()

    def ours(cands):
        return m.attributes.estimate(np.stack([c.image for c in cands]))

    def judged(cands):
        return np.array([judge.estimate(paste_synthetic(m, astronaut, astronaut_face, aligned, c.image, 0),
                                        astronaut_face.box).age for c in cands])

    labels = (1.0, 14.0)
    plain = ranked_identities(m, ws, astronaut_face, labels, seeds, SwapConfig(attribute_steps=0), rank=False)
    steered = ranked_identities(m, ws, astronaut_face, labels, seeds, SwapConfig(), rank=False)
    again = ranked_identities(m, ws, astronaut_face, labels, seeds, SwapConfig(), rank=False)
    assert all(torch.equal(a.ws, b.ws) and np.array_equal(a.image, b.image) for a, b in zip(steered, again))
    (p0, a0), (p1, a1) = ours(plain), ours(steered)
    err0, err1 = np.abs(np.log1p(a0) - np.log1p(14)).mean(), np.abs(np.log1p(a1) - np.log1p(14)).mean()
    assert a0.mean() > 19 and err1 < 0.7 * err0 and a1.mean() < a0.mean() - 5, (a0, a1)
    assert (p1 >= 0.5).all(), p1

    labels = (1.0, 60.0)
    plain = ranked_identities(m, ws, astronaut_face, labels, seeds, SwapConfig(attribute_steps=0), rank=False)
    steered = ranked_identities(m, ws, astronaut_face, labels, seeds, SwapConfig(), rank=False)
    (p0, a0), (p1, a1) = ours(plain), ours(steered)
    err0, err1 = np.abs(np.log1p(a0) - np.log1p(60)), np.abs(np.log1p(a1) - np.log1p(60))
    assert err1.mean() < 0.7 * err0.mean() and err1.max() < err0.max() and (p1 >= 0.5).all(), (a0, a1, p1)
    j0, j1 = judged(plain), judged(steered)
    assert np.median(j0) < 50 and abs(np.median(j1) - 60) < abs(np.median(j0) - 60) - 2, (j0, j1)


class _BoxJudge:
    """Finds the result far from the original only in the exact detection box ``box``; in any other box, near."""

    def __init__(self, box):
        self.box, self.boxes = np.asarray(box, np.float32), []

    def _tag(self, b):
        b = np.asarray(b.box if hasattr(b, "box") else b, np.float32)
        self.boxes.append(b)
        return np.array([float(np.allclose(b, self.box))], np.float32)

    def embed(self, image, box):
        return self._tag(box)

    def embed_many(self, images, boxes):
        return np.stack([self._tag(b) for b in boxes])

    far = 0.7  # in the detection box: past the bar of 0.62

    def distance(self, a, b):
        return self.far if b[0] == 1 else 0.3


def test_a_try_must_pass_in_the_boxes_another_detector_would_draw(models, astronaut, astronaut_face):
    """A swap that passes the judge only in the detection box is re-identified by a pipeline that finds the face in
    a slightly different box (benchmarks/swap.py "re-id rd"): the guard judges a passing try in moved, grown and
    shrunk boxes too, and refuses it there."""
    import dataclasses

    from deid.swap import jittered
    from deid.track import box_iou

    cfg = SwapConfig(max_tries=4, hopeless=0.0, young_age=0.0)  # no face counts as a young child
    judge = _BoxJudge(astronaut_face.box)
    out, res = swap_face(astronaut, astronaut_face, dataclasses.replace(models, judge=judge),
                         dataclasses.replace(cfg, guard_jitter=0.0))
    assert res.method == "swap" and res.tries == 1
    judge = _BoxJudge(astronaut_face.box)
    out, res = swap_face(astronaut, astronaut_face, dataclasses.replace(models, judge=judge), cfg)
    assert res.method in ("pixelate", "solid") and res.tries == 4
    others = jittered(astronaut_face, cfg.guard_jitter)
    assert len(others) == 6
    iou = box_iou(np.stack([f.box for f in others]), astronaut_face.box[None])[:, 0]
    assert np.all(iou > 0.7) and np.all(iou < 0.95), iou
    assert all(np.array_equal(f.landmarks, astronaut_face.landmarks) for f in others)
    for f in others:  # each passing try was judged in every one of them
        assert sum(np.allclose(b, f.box) for b in judge.boxes) == 4
    judge = _BoxJudge(astronaut_face.box)
    judge.far = 1.0  # however far past the bar in the detection box: refused in the nearby ones
    out, res = swap_face(astronaut, astronaut_face, dataclasses.replace(models, judge=judge), cfg)
    assert res.method in ("pixelate", "solid") and res.tries == 4
    for f in others:
        assert sum(np.allclose(b, f.box) for b in judge.boxes) == 4
    # a young child's try is judged in boxes twice as far too
    judge = _BoxJudge(astronaut_face.box)
    judge.far = 1.0
    out, res = swap_face(astronaut, astronaut_face, dataclasses.replace(models, judge=judge),
                         dataclasses.replace(cfg, young_age=200.0))
    assert res.method in ("pixelate", "solid") and res.tries == 4
    for f in others + jittered(astronaut_face, 2 * cfg.guard_jitter):
        assert sum(np.allclose(b, f.box) for b in judge.boxes) == 4
    for bad in (dict(guard_jitter=-0.1), dict(guard_jitter=0.5), dict(attribute_steps=-1),
                dict(attribute_min_age=-1.0), dict(young_age=-1.0)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            SwapConfig(**bad)


def test_a_try_must_pass_in_the_box_a_detector_finds_in_the_result(models, astronaut, astronaut_face,
                                                                   face_detector):
    """A try that passes in the detection box (and its nearby boxes) is judged again in the box MTCNN finds the new
    face in (benchmarks/swap.py "re-id rd": a one-year-old's swap passed at 0.626 and read 0.574 in a box of IoU 0.53
    with the guard's); a judge that finds it near there makes the guard refuse it."""
    import dataclasses

    from deid.align import align_face
    from deid.swap import Candidate, first_unrecognisable
    from deid.track import box_iou

    G = models.G
    aligned = align_face(astronaut, astronaut_face, G.img_resolution, G.cfg.align_template)
    # the face pasted back onto itself: a result MTCNN surely finds a face in
    cands = [Candidate(seed=i, ws=torch.zeros(1, G.num_ws, G.cfg.w_dim), image=aligned.image) for i in range(3)]
    cfg = SwapConfig(max_tries=3, hopeless=0.0, guard_jitter=0.0)
    judge = _BoxJudge(astronaut_face.box)
    judge.far = 1.0
    plain = dataclasses.replace(models, judge=judge)
    attempt, cand, out, d = first_unrecognisable(plain, astronaut, astronaut_face, aligned, np.zeros(1, np.float32),
                                                 iter(cands), cfg)
    assert (attempt, cand.seed, d) == (1, 0, 1.0)  # without a detector: the detection box only
    judge = _BoxJudge(astronaut_face.box)
    judge.far = 1.0
    found = dataclasses.replace(models, judge=judge, detector=face_detector)
    attempt, cand, out, d = first_unrecognisable(found, astronaut, astronaut_face, aligned, np.zeros(1, np.float32),
                                                 iter(cands), cfg)
    assert cand is None and out is None and attempt == 3
    again = [b for b in judge.boxes if not np.allclose(b, astronaut_face.box)]
    assert len(again) == 3  # one re-found box per passing try
    assert np.all(box_iou(np.stack(again), astronaut_face.box[None])[:, 0] > 0.7)
