"""Inversion: encoder + refinement on a tiny generator, the encoder/generator tie, and ``deid invert``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deid.align import align_face
from deid.cli.main import main
from deid.config import EncoderConfig, GeneratorConfig
from deid.errors import ModelError
from deid.invert import encode, invert_faces, load_encoder, refine, save_encoder
from deid.io.images import write_image
from deid.io.weights import save_generator
from deid.nets.encoder import Encoder
from deid.nets.generator import Generator
from deid.train.encoder import file_sha256


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("inv")
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age"))).eval()
    gpath = d / "g.safetensors"
    save_generator(G, gpath, dtype=torch.float32)
    E = Encoder(EncoderConfig.for_generator(G.cfg, channel_base=256, channel_max=32,
                                            generator_sha256=file_sha256(gpath))).eval()
    epath = d / "e.safetensors"
    save_encoder(E, epath, dtype=torch.float32)
    return G, gpath, E, epath


def test_refine_improves_reconstruction(models):
    G, _, E, _ = models
    target = G.synthesis(G.mapping(torch.randn(2, G.z_dim), torch.rand(2, 2)), noise_mode="const").detach()
    ws0 = encode(E, G, target)
    err0 = (G.synthesis(ws0, noise_mode="const") - target).abs().mean()
    ws = refine(G, target, ws0, steps=30, lr=0.05)
    err = (G.synthesis(ws, noise_mode="const") - target).abs().mean()
    assert ws.shape == ws0.shape and err < err0
    assert torch.equal(refine(G, target, ws0, steps=0), ws0)


def test_encoder_refuses_other_generator(models, tmp_path):
    G, gpath, _, epath = models
    other = tmp_path / "other.safetensors"
    torch.manual_seed(5)
    save_generator(Generator(G.cfg), other, dtype=torch.float32)
    with pytest.raises(ModelError, match="another generator"):
        load_encoder(epath, generator_path=other)
    assert isinstance(load_encoder(epath, generator_path=gpath), Encoder)


def test_invert_faces_contract(models, astronaut, astronaut_face):
    G, _, E, _ = models
    aligned = [align_face(astronaut, astronaut_face, 32, "deid")]
    lat = invert_faces(aligned, G, E, steps=2)
    assert len(lat) == 1 and lat[0].ws.shape == (G.num_ws, G.w_dim) and lat[0].ws.dtype == np.float32
    assert lat[0].method == "refined" and lat[0].steps == 2
    assert invert_faces([], G, E) == []
    with pytest.raises(ValueError):
        invert_faces([align_face(astronaut, astronaut_face, 64, "deid")], G, E)


def test_cli_invert(models, astronaut, tmp_path):
    _, gpath, _, epath = models
    photo = tmp_path / "a.png"
    write_image(astronaut, photo)
    out, recon = tmp_path / "lat.npz", tmp_path / "recon"
    r = CliRunner().invoke(main, ["invert", str(photo), "--out", str(out), "--recon-dir", str(recon), "--generator",
                                  str(gpath), "--encoder", str(epath), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    z = np.load(out)
    assert z["ws"].shape == (1, 8, 32) and z["boxes"].shape == (1, 4) and z["landmarks"].shape == (1, 5, 2)
    assert (recon / "face_1.png").is_file()


def test_shipped_encoder_is_tied_to_shipped_generator():
    """The shipped pair loads together (re-exporting the generator without retraining the encoder fails here)."""
    from deid.io.weights import default_model_path, load_generator

    gpath = default_model_path("deid64.safetensors")
    E = load_encoder(default_model_path("deid64-encoder.safetensors"), generator_path=gpath)
    G = load_generator(gpath)
    ws, _, attrs = E(torch.zeros(1, 3, G.img_resolution, G.img_resolution), w_avg=G.mapping.w_avg)
    assert ws.shape == (1, G.num_ws, G.w_dim) and torch.isfinite(ws).all() and attrs.shape == (1, 2)


def test_identity_loss_follows_the_judge(astronaut, astronaut_face):
    """The identity term cuts the judge's chip from a crop differentiably: its descriptor of the target is the
    judge's own, and descending it pulls a blurred face towards the original's identity."""
    import cv2

    from deid.eval.identity import IdentityJudge
    from deid.invert import JUDGE_BOX, JUDGE_SIZE, IdentityLoss, judge_box
    from deid.io.images import to_tensor

    judge = IdentityJudge.default()
    crop = align_face(astronaut, astronaut_face, 64, "deid").image
    target = to_tensor(crop)
    loss = IdentityLoss(judge, target)
    own = judge.embed(cv2.resize(crop, (JUDGE_SIZE, JUDGE_SIZE), interpolation=cv2.INTER_CUBIC), JUDGE_BOX)
    assert judge.distance(loss.target[0].numpy(), own) < 0.06
    assert float(loss(target)[0]) < 0.3  # jittered by 3 % of the chip, the same face stays well inside 0.6
    x = to_tensor(cv2.GaussianBlur(crop, (0, 0), 3)).requires_grad_(True)
    d0 = float(loss(x)[0].detach())
    opt = torch.optim.Adam([x], lr=0.02)
    for _ in range(15):
        opt.zero_grad()
        loss(x).sum().backward()
        opt.step()
    assert float(loss(x)[0].detach()) < d0 * 0.7
    assert np.allclose(judge_box("deid"), JUDGE_BOX)
    inner = judge_box("ffhq")  # the same face in a wider crop: a smaller box inside it
    assert (inner[2] - inner[0]) < (JUDGE_BOX[2] - JUDGE_BOX[0]) and 0 < inner[0] < inner[2] < JUDGE_SIZE


def test_refine_with_identity_term(models, astronaut, astronaut_face):
    """``invert_faces`` with a judge refines with the identity term (the tiny generator cannot draw a face; this
    checks the plumbing: the code moves and stays finite)."""
    from deid.eval.identity import IdentityJudge

    G, _, E, _ = models
    aligned = [align_face(astronaut, astronaut_face, 32, "deid")]
    plain = invert_faces(aligned, G, E, steps=3)
    with_id = invert_faces(aligned, G, E, steps=3, judge=IdentityJudge.default(), identity_weight=5.0)
    assert np.isfinite(with_id[0].ws).all() and not np.allclose(plain[0].ws, with_id[0].ws)
