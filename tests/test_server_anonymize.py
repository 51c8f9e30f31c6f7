"""POST /v1/faces/anonymize: a real uvicorn server on 127.0.0.1 with a tiny random generator and its tiny encoder
(tied by sha256), spoken to over HTTP with multipart uploads of a composed three-face photo.

The in-memory image reader and writer it uses (``decode_image``, ``encode_image``) are checked against the file ones.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageCms

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from conftest import adult_attribute_head, compose_scene
from test_io_images import BAD_FILES
from test_server import LiveServer, _executor_blocked, _wait_until

from deid.cli.main import main
from deid.config import EncoderConfig, GeneratorConfig, ServerConfig
from deid.errors import ConfigError, InputError, ModelError
from deid.invert import save_encoder
from deid.io.images import decode_image, encode_image, read_image, write_image
from deid.io.weights import save_generator
from deid.nets.encoder import Encoder
from deid.nets.generator import Generator
from deid.server import QueueFullError, create_app
from deid.server.anonymize import AnonymizeWorker, parse_form
from deid.train.encoder import file_sha256

PATH = "/v1/faces/anonymize"
TIMEOUT = 60.0  # seconds for one HTTP exchange (a swap of three faces takes a few seconds on one CPU thread)
UPLOAD_LIMIT = 4 * 1024 * 1024  # the test server's upload limit (the default is 20 MiB)
PIXEL_LIMIT = 2_000_000  # the test server's pixel limit (the default is 50 Mpx)
MIN_FACE = 40  # every face of the test photo is >= 60 px; 40 skips the slow small-face tiling
# (x, y, face size, angle): three faces, largest first, far enough apart for their obscured ellipses not to touch
PLACEMENTS = [(130, 150, 130, 0), (360, 140, 90, -10), (540, 250, 70, 8)]
BACKGROUND = (slice(310, 360), slice(0, 60))  # rows, columns of a patch no face or blend reaches


# ---------------------------------------------------------------------------------------------------------------------
# Models, server, photos


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny conditional generator and an encoder trained (here: initialised) for exactly that file."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("models")
    G = Generator(GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age")))
    save_generator(G, d / "g.safetensors")
    ecfg = EncoderConfig.for_generator(G.cfg, channel_base=256, channel_max=32,
                                       generator_sha256=file_sha256(d / "g.safetensors"))
    save_encoder(adult_attribute_head(Encoder(ecfg)), d / "e.safetensors")
    return d / "g.safetensors", d / "e.safetensors"


@pytest.fixture(scope="module")
def live(tiny_pair) -> LiveServer:
    generator, encoder = tiny_pair
    config = ServerConfig(model=str(generator), encoder=str(encoder), device="cpu", max_batch=2,
                          max_upload_bytes=UPLOAD_LIMIT, max_upload_pixels=PIXEL_LIMIT, max_anonymize_queue=1)
    with LiveServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def group(astronaut, astronaut_face) -> np.ndarray:
    """``[360, 640, 3]`` uint8: three faces of 130, 90 and 70 px."""
    return compose_scene(astronaut, astronaut_face, (360, 640), PLACEMENTS, seed=5).image


def _encoded(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **options)
    return buf.getvalue()


def _private_jpeg(pixels: np.ndarray) -> bytes:
    """A JPEG carrying a GPS position, a camera serial number, a comment and an sRGB ICC profile."""
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0xA431] = "SERIAL-123456"
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 5.0), 3: "E", 4: (4.0, 53.0, 40.0)})  # GPS
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _encoded(pixels, "JPEG", exif=exif.tobytes(), comment=b"secret caption", icc_profile=icc, quality=92)


def _anonymize(client: httpx.Client, data: bytes, name: str = "photo.jpg", **fields) -> httpx.Response:
    return client.post(PATH, files={"image": (name, data, "application/octet-stream")},
                       data={"min_face": str(MIN_FACE)} | {k: str(v) for k, v in fields.items()})


def _ok(r: httpx.Response) -> tuple[dict, bytes]:
    assert r.status_code == 200, r.text
    body = r.json()
    return body, base64.b64decode(body["image"], validate=True)


def _change(a: np.ndarray, b: np.ndarray, box) -> float:
    """Mean absolute difference of two images inside ``box`` (xyxy pixels)."""
    x0, y0, x1, y1 = (round(v) for v in box)
    return float(np.abs(a[y0:y1, x0:x1].astype(np.float32) - b[y0:y1, x0:x1].astype(np.float32)).mean())


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------------------------------------------
# The photo comes back anonymised, in the same form, without metadata


def test_swap_every_face_keeps_format_and_size_and_strips_gps(client, group):
    upload = _private_jpeg(group)
    stored_before = client.get("/healthz").json()["images_stored"]
    body, data = _ok(_anonymize(client, upload))
    assert body["format"] == "jpeg" and body["content_type"] == "image/jpeg" and body["mode"] == "swap"
    assert (body["width"], body["height"]) == (640, 360)
    assert set(body["timings_ms"]) == {"queue", "read", "detect", "anonymize", "encode"}
    faces = body["faces"]
    assert [f["id"] for f in faces] == [1, 2, 3]  # every placed face found, largest first
    for f, (x, y, size, _) in zip(faces, PLACEMENTS):
        centre = np.array([(f["box"][0] + f["box"][2]) / 2, (f["box"][1] + f["box"][3]) / 2])
        assert np.linalg.norm(centre - (x, y)) < 0.35 * size
        assert f["method"] in ("swap", "pixelate", "solid")  # a swap the identity guard refused falls back
        swap = f["swap"]
        assert swap["tries"] >= 1 and (swap["seed"] >= 0) == (f["method"] == "swap")
        assert f["method"] != "swap" or swap["identity_distance"] >= 0.6
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (640, 360) and im.mode == "RGB"
        assert not im.getexif() and "comment" not in im.info
        assert im.info.get("icc_profile") == Image.open(io.BytesIO(upload)).info["icc_profile"]
    assert b"Exif" not in data and b"SERIAL-123456" not in data and b"secret caption" not in data
    before = _pixels(upload)
    after = _pixels(data)
    for f in faces:
        assert _change(before, after, f["box"]) > 10, f"face {f['id']} was not changed"
    assert _change(before, after, (0, 310, 60, 360)) < 3  # JPEG re-encoding only
    assert client.get("/healthz").json()["images_stored"] == stored_before  # uploads never reach the store


def test_swap_is_deterministic_and_follows_the_seed(client, group):
    upload = _encoded(group, "PNG")
    a = _ok(_anonymize(client, upload, "g.png", seed=3, only="1"))
    b = _ok(_anonymize(client, upload, "g.png", seed=3, only="1"))
    assert a[1] == b[1] and _without_times(a[0]["faces"]) == _without_times(b[0]["faces"])
    assert [f["method"] for f in a[0]["faces"]][1:] == ["kept", "kept"]
    if a[0]["faces"][0]["method"] == "swap":
        c = _ok(_anonymize(client, upload, "g.png", seed=4, only="1"))
        assert c[0]["faces"][0]["swap"]["seed"] != a[0]["faces"][0]["swap"]["seed"]


def test_max_tries_bounds_the_guard(client, group):
    """``max_tries`` reaches the identity guard: with a bar no swap can pass, the face falls back after exactly that
    many tries, as ``deid photo --max-tries`` does."""
    body, _ = _ok(_anonymize(client, _encoded(group, "PNG"), "g.png", only="1", threshold=5.0, max_tries=2))
    face = body["faces"][0]
    assert face["method"] in ("pixelate", "solid") and face["swap"]["tries"] == 2


def test_min_swap_age_reaches_the_swap(client, group):
    """``min_swap_age`` reaches the swap, as ``deid photo --min-swap-age`` does: above every face's reading, the face
    is pixelated without a try, with the reason in the report."""
    body, _ = _ok(_anonymize(client, _encoded(group, "PNG"), "g.png", only="1", min_swap_age=150))
    face = body["faces"][0]
    assert face["method"] in ("pixelate", "solid") and face["swap"]["tries"] == 0
    assert face["swap"]["fallback_reason"] == "young" and face["swap"]["age"] < 150


@pytest.mark.parametrize("fmt, mode, pil_mode", [("png", "blur", "RGBA"), ("webp", "pixelate", "RGB"),
                                                  ("tiff", "solid", "RGB"), ("bmp", "blur", "RGB")])
def test_obscure_modes_keep_format_size_and_alpha(client, group, fmt, mode, pil_mode):
    pixels = group
    if pil_mode == "RGBA":
        alpha = np.full(group.shape[:2], 255, np.uint8)
        alpha[:, 600:] = 90  # a semi-transparent strip, away from the faces
        pixels = np.dstack([group, alpha])
    options = {"lossless": True} if fmt == "webp" else {}
    upload = _encoded(pixels, fmt.upper(), **options)
    body, data = _ok(_anonymize(client, upload, f"g.{fmt}", mode=mode))
    assert body["format"] == fmt and body["mode"] == mode
    assert [f["method"] for f in body["faces"]] == [mode] * 3 and all("swap" not in f for f in body["faces"])
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == fmt.upper() and im.size == (640, 360) and im.mode == pil_mode
        out = np.asarray(im)
    if pil_mode == "RGBA":
        assert np.array_equal(out[..., 3], pixels[..., 3])
    before, after = np.asarray(pixels)[..., :3], out[..., :3]
    for f in body["faces"]:
        assert _change(before, after, f["box"]) > 5, f"face {f['id']} was not changed"
    assert np.array_equal(before[BACKGROUND], after[BACKGROUND])  # lossless formats: untouched elsewhere


def test_only_and_skip_pick_faces_by_number(client, group):
    upload = _encoded(group, "PNG")
    body, data = _ok(_anonymize(client, upload, "g.png", mode="solid", skip="2"))
    assert [f["method"] for f in body["faces"]] == ["solid", "kept", "solid"]
    after = _pixels(data)
    assert _change(group, after, body["faces"][1]["box"]) == 0
    body, _ = _ok(_anonymize(client, upload, "g.png", mode="solid", only="1, 3"))
    assert [f["method"] for f in body["faces"]] == ["solid", "kept", "solid"]


def test_api_gives_the_bytes_and_report_of_deid_photo(client, group, tmp_path):
    src, dst, report = tmp_path / "g.png", tmp_path / "anon.png", tmp_path / "r.json"
    src.write_bytes(_encoded(group, "PNG"))
    r = CliRunner().invoke(main, ["photo", str(src), "-o", str(dst), "--mode", "pixelate", "--min-face", str(MIN_FACE),
                                  "--skip", "3", "--report", str(report), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    body, data = _ok(_anonymize(client, src.read_bytes(), "g.png", mode="pixelate", skip="3"))
    assert data == dst.read_bytes()
    cli_faces = json.loads(report.read_text())[0]["faces"]
    assert _without_times(body["faces"]) == _without_times(cli_faces)


def _without_times(faces: list[dict]) -> list[dict]:
    """Faces without their timings and the CLI report's extra independent-judge check."""
    return [{k: v for k, v in f.items() if k not in ("time_ms", "judge")} for f in faces]


def test_no_face_gives_the_photo_back_reencoded(client):
    plain = np.full((64, 96, 3), 128, np.uint8)
    body, data = _ok(_anonymize(client, _encoded(plain, "PNG"), "p.png", mode="blur"))
    assert body["faces"] == [] and np.array_equal(_pixels(data), plain)


# ---------------------------------------------------------------------------------------------------------------------
# Nothing is written to disk


class _WriteWatch:
    """Records every file opened for writing in this process (audit hook; hooks cannot be removed, so it is
    installed once and only records while ``active``)."""

    active: ClassVar[bool] = False
    seen: ClassVar[list[str]] = []
    installed: ClassVar[bool] = False

    @classmethod
    @contextmanager
    def watching(cls):
        if not cls.installed:
            sys.addaudithook(cls._hook)
            cls.installed = True
        cls.seen = []
        cls.active = True
        try:
            yield cls.seen
        finally:
            cls.active = False

    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        if not cls.active or event not in ("open", "tempfile.mkstemp", "tempfile.mkdtemp"):
            return
        if event != "open":
            cls.seen.append(f"{event} {args}")
            return
        path, mode, flags = args
        writes = bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)) or any(c in (mode or "") for c in "wax+")
        if writes:
            cls.seen.append(f"open {path!r} {mode!r}")


def test_uploads_are_never_written_to_disk(client):
    # 3 MB of noise: larger than the 1 MiB above which Starlette's own form parsing spools a file to disk
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    upload = _encoded(noise, "PNG")
    assert 1024 * 1024 * 2 < len(upload) < UPLOAD_LIMIT - 4096
    with _WriteWatch.watching() as writes:
        body, data = _ok(_anonymize(client, upload, "noise.png", mode="blur", min_face=200))
    assert writes == []
    assert body["format"] == "png" and len(data) > 1024 * 1024


# ---------------------------------------------------------------------------------------------------------------------
# Bad uploads


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_photo_is_400_naming_the_cause(client, name):
    make, cause = BAD_FILES[name]
    r = _anonymize(client, make(), name, mode="blur")
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "\n" not in detail
    assert re.match(rf"upload: {cause}", detail), detail


def test_too_many_pixels_is_400_before_decoding(client):
    big = np.zeros((1500, 1500, 3), np.uint8)  # 2.25 Mpx > the test server's 2 Mpx, a tiny PNG
    r = _anonymize(client, _encoded(big, "PNG"), "big.png", mode="blur")
    assert r.status_code == 400
    assert r.json()["detail"] == "upload: image too large (1500x1500 = 2 Mpx, limit 2 Mpx; possible decompression bomb)"


def _multipart(data: bytes, boundary: str = "deidtestboundary") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"mode\"\r\n\r\nblur\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


def test_upload_over_the_limit_is_413(live, client):
    body = _multipart(bytes(UPLOAD_LIMIT))
    headers = {"content-type": "multipart/form-data; boundary=deidtestboundary"}
    # declared: refused from the headers alone, before any of the body is sent
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=TIMEOUT)
    try:
        conn.putrequest("POST", PATH)
        conn.putheader("Content-Type", headers["content-type"])
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413 and str(UPLOAD_LIMIT) in resp.read().decode()
    finally:
        conn.close()

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    try:
        r = client.post(PATH, content=chunks(), headers=headers)
        assert r.status_code == 413
    except httpx.TransportError:  # the server may close before the client has sent everything: also a refusal
        pass
    # the JSON limit (64 KiB) is not the upload limit, and the JSON endpoints keep theirs
    assert _anonymize(client, _encoded(np.zeros((400, 400, 3), np.uint8), "BMP"), "z.bmp",
                      mode="blur").status_code == 200
    big_json = b'{"seed": 1, "pad": "' + b"a" * (70 * 1024) + b'"}'
    r = client.post("/v1/faces/generate", content=big_json, headers={"content-type": "application/json"})
    assert r.status_code == 413


BAD_FORMS = [
    ({"mode": "smudge"}, ("body", "mode")),
    ({"only": "one"}, ("body", "only")),
    ({"skip": "0"}, ("body", "skip")),
    ({"only": "1,2", "skip": "2"}, ("body",)),
    ({"psi": "1.5"}, ("body", "psi")),
    ({"seed": "-1"}, ("body", "seed")),
    ({"seed": "1.5"}, ("body", "seed")),
    ({"threshold": "0"}, ("body", "threshold")),
    ({"max_tries": "0"}, ("body", "max_tries")),
    ({"min_swap_age": "-1"}, ("body", "min_swap_age")),
    ({"min_face": "2"}, ("body", "min_face")),
    ({"det_threshold": "1"}, ("body", "det_threshold")),
    ({"key": "short"}, ("body", "key")),
    ({"colour": "red"}, ("body", "colour")),  # unknown field
]


@pytest.mark.parametrize("fields, loc", BAD_FORMS, ids=[str(f) for f, _ in BAD_FORMS])
def test_bad_form_field_is_422(client, fields, loc):
    r = client.post(PATH, files={"image": ("g.png", b"not looked at", "image/png")}, data=fields)
    assert r.status_code == 422, r.text
    assert any(tuple(e["loc"]) == loc and e["msg"] for e in r.json()["detail"]), r.json()


def test_missing_photo_wrong_content_type_and_broken_multipart(client):
    r = client.post(PATH, data={"mode": "blur"}, files={"other": ("x.png", b"x")})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image"]
    r = client.post(PATH, files=[("image", ("a.png", b"a")), ("image", ("b.png", b"b"))])
    assert r.status_code == 422 and "one photo" in r.json()["detail"][0]["msg"]
    r = client.post(PATH, json={"mode": "blur"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post(PATH, content=b"\x89PNG", headers={"content-type": "image/png"})
    assert r.status_code == 415
    truncated = _multipart(b"\x89PNG" + bytes(100))[:-30]
    r = client.post(PATH, content=truncated, headers={"content-type": "multipart/form-data; boundary=deidtestboundary"})
    assert r.status_code == 400 and "closing boundary" in r.json()["detail"]
    r = client.post(PATH, content=_multipart(b"x"), headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and "boundary" in r.json()["detail"]


# ---------------------------------------------------------------------------------------------------------------------
# One photo at a time, the rest of the API stays responsive


def _anonymizer_blocked(live: LiveServer):
    """Block the anonymize thread, so that uploads wait until the block ends."""
    return _executor_blocked(live.app.state.anonymizer._executor)


def test_busy_anonymizer_is_503_and_health_and_generate_stay_responsive(live, client):
    upload = _encoded(np.full((48, 48, 3), 100, np.uint8), "PNG")
    n = 4  # with max_anonymize_queue=1: two are accepted (waiting behind the block), two refused
    statuses: list[int] = []
    retry: list[str | None] = []

    def post() -> None:
        with httpx.Client(base_url=live.base_url, timeout=TIMEOUT) as c:
            r = _anonymize(c, upload, "p.png", mode="blur")
        statuses.append(r.status_code)
        retry.append(r.headers.get("retry-after"))

    with ThreadPoolExecutor(n) as pool:
        with _anonymizer_blocked(live):
            futures = [pool.submit(post) for _ in range(n)]
            _wait_until(lambda: client.get("/healthz").json()["anonymize_pending"] == 2 and len(statuses) == 2)
            t0 = time.perf_counter()
            health = client.get("/healthz")
            gen = client.post("/v1/faces/generate", json={"seed": 1})
            assert health.status_code == 200 and gen.status_code == 200
            assert time.perf_counter() - t0 < 10  # not stuck behind the blocked anonymizer
            assert statuses == [503, 503] and retry == ["1", "1"]
        for f in futures:
            f.result(timeout=TIMEOUT)
    assert sorted(statuses) == [200, 200, 503, 503]
    _wait_until(lambda: client.get("/healthz").json()["anonymize_pending"] == 0)


def test_worker_bounds_and_releases_places():
    async def scenario() -> None:
        worker = AnonymizeWorker(max_queue=0)
        gate = threading.Event()
        first = asyncio.ensure_future(worker.run(gate.wait, TIMEOUT))
        await asyncio.sleep(0)
        assert worker.pending == 1 and worker.full
        with pytest.raises(QueueFullError):
            await worker.run(time.sleep, 0)
        gate.set()
        assert await first is True
        await asyncio.sleep(0.05)
        assert worker.pending == 0 and worker.completed == 1
        with pytest.raises(ZeroDivisionError):
            await worker.run(lambda: 1 / 0)
        await asyncio.sleep(0.05)
        assert worker.pending == 0
        worker.close()
        with pytest.raises(QueueFullError):
            await worker.run(time.sleep, 0)

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------------------------------------
# Models: swap needs the encoder, the other modes do not


def test_without_encoder_swap_is_503_and_other_modes_work(tiny_pair, group):
    generator, _ = tiny_pair
    config = ServerConfig(model=str(generator), device="cpu", max_batch=1)  # the shipped encoder is not installed
    with LiveServer(config) as server, httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as c:
        h = c.get("/healthz").json()
        assert h["modes"] == ["blur", "pixelate", "solid"] and "encoder" in h["swap_unavailable"]
        upload = _encoded(group[:200, :260], "PNG")
        for fields in ({}, {"mode": "swap"}):
            r = _anonymize(c, upload, "g.png", **fields)
            assert r.status_code == 503 and "retry-after" not in r.headers
            assert "swap" in r.json()["detail"] and "blur" in r.json()["detail"]
        body, _ = _ok(_anonymize(c, upload, "g.png", mode="pixelate"))
        assert [f["method"] for f in body["faces"]] == ["pixelate"]


def test_encoder_of_another_generator_stops_the_start(tiny_pair, tmp_path):
    _, encoder = tiny_pair
    torch.manual_seed(9)
    other = tmp_path / "other.safetensors"
    save_generator(Generator(GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age"))), other)
    config = ServerConfig(model=str(other), encoder=str(encoder), device="cpu", max_batch=1)
    app = create_app(config)

    async def start() -> None:
        async with app.router.lifespan_context(app):  # the start-up uvicorn runs
            pass

    with pytest.raises(ModelError, match="trained for another generator"):
        asyncio.run(start())


def test_healthz_and_openapi_describe_anonymize(client):
    h = client.get("/healthz").json()
    assert h["modes"] == ["swap", "blur", "pixelate", "solid"] and h["swap_unavailable"] is None
    assert h["max_upload_bytes"] == UPLOAD_LIMIT and h["anonymize_pending"] == 0
    doc = client.get("/openapi.json").json()
    op = doc["paths"][PATH]["post"]
    form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["image"] and form["properties"]["image"]["format"] == "binary"
    assert form["properties"]["mode"]["enum"] == ["swap", "blur", "pixelate", "solid"]
    assert {"only", "skip", "seed", "key", "psi", "threshold", "min_face", "det_threshold"} <= set(form["properties"])
    assert {"400", "413", "415", "422", "503"} <= set(op["responses"])
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"image", "format", "width", "height", "faces", "timings_ms"} <= set(schema["properties"])
    assert "FaceReport" in doc["components"]["schemas"]


def test_server_config_upload_fields():
    config = ServerConfig()
    assert config.max_upload_bytes == 20 * 1024 * 1024 and config.max_body_bytes == 64 * 1024
    assert config.encoder is None and config.max_anonymize_queue >= 1
    for bad in ({"max_upload_bytes": 10}, {"max_upload_pixels": 0}, {"max_anonymize_queue": -1}):
        with pytest.raises(ConfigError):
            ServerConfig(**bad)
    res = CliRunner().invoke(main, ["serve", "--help"])
    assert all(flag in res.output for flag in ("--encoder", "--max-upload-mb", "--anonymize-queue"))


# ---------------------------------------------------------------------------------------------------------------------
# The in-memory reader, writer and form parser


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif", ".bmp"])
def test_memory_and_file_io_agree(tmp_path, group, suffix):
    src = tmp_path / f"src{suffix}"
    fmt = Image.registered_extensions()[suffix]
    src.write_bytes(_private_jpeg(group) if suffix == ".jpg" else _encoded(group, fmt))
    from_file, from_bytes = read_image(src), decode_image(src.read_bytes(), name="upload")
    assert np.array_equal(from_file.pixels, from_bytes.pixels) and from_bytes.path == "upload"
    for field in ("format", "mode", "bits", "icc_profile", "dpi", "subsampling", "lossless", "exif", "comment"):
        assert getattr(from_file, field) == getattr(from_bytes, field), field
    out = write_image(from_file.pixels, tmp_path / f"out{suffix}", like=from_file)
    assert encode_image(from_bytes.pixels, like=from_bytes) == out.read_bytes()


def test_memory_io_errors():
    with pytest.raises(InputError, match=r"^upload: empty file \(0 bytes\)$"):
        decode_image(b"", name="upload")
    with pytest.raises(ValueError, match="fmt"):
        encode_image(np.zeros((4, 4, 3), np.uint8))
    assert encode_image(np.zeros((4, 4, 3), np.uint8), fmt="jpg")[:2] == b"\xff\xd8"


def test_parse_form_keeps_parts_in_memory():
    body = _multipart(b"\x00\r\n--almost a boundary\r\n" * 1000)
    parts = parse_form(body, "multipart/form-data; boundary=deidtestboundary")
    assert [(p.name, p.filename) for p in parts] == [("mode", None), ("image", "x.png")]
    assert parts[0].data == b"blur" and parts[1].data == b"\x00\r\n--almost a boundary\r\n" * 1000
