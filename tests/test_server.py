"""HTTP API (``deid serve``): a real uvicorn server on 127.0.0.1 with a tiny random generator, spoken to over HTTP.

The store, the batch invariance the batcher relies on and the encoder are also unit-tested directly. Photo
anonymisation (POST /v1/faces/anonymize) is tested in ``test_server_anonymize.py``, with ``LiveServer`` from here.
"""

from __future__ import annotations

import base64
import http.client
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from deid.cli.main import main
from deid.config import GeneratorConfig, ServerConfig
from deid.errors import ConfigError
from deid.generate import FaceSpec, seed_ws
from deid.io.images import write_image
from deid.io.weights import load_generator, save_generator
from deid.nets.generator import Generator
from deid.server import ImageStore, create_app, encode_face, is_image_id, render_faces

NATIVE = 32  # tiny32
MAX_BATCH = 8
MAX_QUEUE = 16
TIMEOUT = 30.0  # seconds for any single HTTP exchange or wait


# ---------------------------------------------------------------------------------------------------------------------
# A real server in a thread


class LiveServer:
    """uvicorn serving ``create_app(config)`` on a free 127.0.0.1 port, in a daemon thread."""

    def __init__(self, config: ServerConfig):
        self.app = create_app(config)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        _wait_until(lambda: self.server.started or not self.thread.is_alive())
        if not self.server.started:
            raise RuntimeError("the test server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT)
        self.sock.close()


def _wait_until(cond, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


@contextmanager
def _executor_blocked(executor):
    """Occupy a worker's one thread (test-only access), so that requests pile up until the block ends."""
    release = threading.Event()
    executor.submit(release.wait, TIMEOUT)
    try:
        yield
    finally:
        release.set()


def _worker_blocked(live: LiveServer):
    """Block the generator thread."""
    return _executor_blocked(live.app.state.batcher._executor)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    # 64 channels rather than tiny32's 32: wide enough that, on the CPU, batch size 1 and 8 give a few different
    # uint8 pixels without padding, so the batched-vs-sequential test below can catch a batch-dependent result
    torch.manual_seed(3)
    G = Generator(GeneratorConfig.preset("tiny32", c_dim=2, c_labels=("female", "age"), channel_base=2048,
                                         channel_max=64))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_generator(G, path)
    return path


@pytest.fixture(scope="module")
def live(tiny_model) -> LiveServer:
    config = ServerConfig(model=str(tiny_model), device="cpu", max_batch=MAX_BATCH, max_queue=MAX_QUEUE,
                          store_max_items=256, store_ttl_s=300)
    with LiveServer(config) as server:
        yield server


def _generate(client: httpx.Client, **body) -> dict:
    r = client.post("/v1/faces/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _fetch(client: httpx.Client, url: str) -> httpx.Response:
    r = client.get(url)
    assert r.status_code == 200, r.text
    return r


def _latent(resp: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(resp["latent_vector"]), dtype="<f4").reshape(resp["latent_shape"])


def _generate_and_fetch(base_url: str, body: dict) -> tuple[bytes, bytes]:
    """(image bytes, latent bytes) over a fresh connection (for use from worker threads)."""
    with httpx.Client(base_url=base_url, timeout=TIMEOUT) as c:
        resp = _generate(c, **body)
        return _fetch(c, resp["image_url"]).content, base64.b64decode(resp["latent_vector"])


def _waiting(client: httpx.Client) -> int:
    """Generate requests inside the server now: queued plus in the running forward pass."""
    health = client.get("/healthz").json()
    return health["queued"] + health["running"]


def _raw_get(port: int, path: str) -> int:
    """Status of GET ``path`` sent byte for byte (no client-side normalisation of ``..`` or escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------------------------
# Service endpoints


def test_healthz(client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["model_loaded"] is True
    assert h["resolution"] == NATIVE and h["device"] == "cpu" and h["conditional"] is True
    assert h["max_batch"] == MAX_BATCH


def test_openapi_lists_endpoints(client):
    doc = client.get("/openapi.json").json()
    assert {"/healthz", "/v1/faces/generate", "/v1/images/{image_id}", "/v1/faces/anonymize"} <= set(doc["paths"])
    resolution = doc["components"]["schemas"]["GenerateRequest"]["properties"]["resolution"]
    assert "1024x1024" in resolution["description"] and "square" in resolution["description"]


# ---------------------------------------------------------------------------------------------------------------------
# Generate


@pytest.mark.parametrize("fmt, resolution, size", [("png", None, NATIVE), ("jpeg", "64x64", 64), ("webp", "16x16", 16),
                                                    ("png", "100x100", 100)])
def test_generate_fetch_decode(client, fmt, resolution, size):
    body = {"seed": 11, "format": fmt} | ({} if resolution is None else {"resolution": resolution})
    resp = _generate(client, **body)
    assert resp["seed"] == 11 and resp["generation_time_ms"] > 0
    r = _fetch(client, resp["image_url"])
    assert r.headers["content-type"] == f"image/{fmt}"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == fmt.upper() and img.size == (size, size) and img.mode == "RGB"


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_same_request_gives_identical_bytes(client, fmt):
    body = {"seed": 21, "format": fmt, "resolution": "48x48", "truncation_psi": 0.5}
    a, b = _generate(client, **body), _generate(client, **body)
    assert a["image_url"] != b["image_url"]  # a new id each time
    assert a["latent_vector"] == b["latent_vector"]
    assert _fetch(client, a["image_url"]).content == _fetch(client, b["image_url"]).content


def test_latent_vector_matches_library_and_cli(client, tiny_model, tmp_path):
    resp = _generate(client, seed=5, truncation_psi=0.6, age=30, gender="female")
    ws = _latent(resp)
    G = load_generator(tiny_model)
    assert resp["latent_shape"] == [G.num_ws, G.w_dim] and ws.dtype == np.float32
    expected = seed_ws(G, FaceSpec(seed=5, psi=0.6, age=30, female=1.0))[0].numpy()
    np.testing.assert_array_equal(ws, expected)
    out, latent = tmp_path / "f.png", tmp_path / "w.npy"
    res = CliRunner().invoke(main, ["generate", "--seed", "5", "--psi", "0.6", "--age", "30", "--gender", "female",
                                    "--model", str(tiny_model), "--device", "cpu", "-o", str(out),
                                    "--latent-out", str(latent)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(ws, np.load(latent)[0])


def test_seed_omitted_gets_random_seed(client):
    a, b = _generate(client), _generate(client)
    assert 0 <= a["seed"] < 2**32 and a["seed"] != b["seed"]
    again = _generate(client, seed=a["seed"])
    assert again["latent_vector"] == a["latent_vector"]
    assert _fetch(client, again["image_url"]).content == _fetch(client, a["image_url"]).content


def test_age_and_gender_change_the_face(client):
    plain = _latent(_generate(client, seed=8))
    old = _latent(_generate(client, seed=8, age=80, gender="male"))
    young = _latent(_generate(client, seed=8, age=20, gender="male"))
    assert not np.array_equal(old, young) and not np.array_equal(plain, old)


@pytest.mark.parametrize("layers, rows", [("0-1", range(2)), ("coarse", range(4)), ("fine", range(8, 8))])
def test_style_mixing(client, layers, rows):
    content = _latent(_generate(client, seed=3))
    style = _latent(_generate(client, seed=9))
    resp = _generate(client, style_mixing={"content_seed": 3, "style_seed": 9, "layers": layers})
    mixed = _latent(resp)
    assert resp["seed"] == 3
    for i in range(mixed.shape[0]):
        np.testing.assert_array_equal(mixed[i], (style if i in rows else content)[i])
    assert _fetch(client, resp["image_url"]).headers["content-type"] == "image/png"


def test_style_mixing_default_layers_are_fine(client):
    a = _generate(client, style_mixing={"content_seed": 3, "style_seed": 9})
    b = _generate(client, style_mixing={"content_seed": 3, "style_seed": 9, "layers": "fine"})
    assert a["latent_vector"] == b["latent_vector"]


# ---------------------------------------------------------------------------------------------------------------------
# Validation and limits


BAD_FIELDS = [
    ({"truncation_psi": 1.5}, ("body", "truncation_psi")),
    ({"truncation_psi": -0.1}, ("body", "truncation_psi")),
    ({"truncation_psi": "high"}, ("body", "truncation_psi")),
    ({"resolution": "64x32"}, ("body", "resolution")),
    ({"resolution": "8x8"}, ("body", "resolution")),  # below 16 and not native
    ({"resolution": "2048x2048"}, ("body", "resolution")),
    ({"resolution": "large"}, ("body", "resolution")),
    ({"resolution": 64}, ("body", "resolution")),
    ({"format": "gif"}, ("body", "format")),
    ({"colour": "red"}, ("body", "colour")),  # unknown field
    ({"seed": -1}, ("body", "seed")),
    ({"seed": 2**32}, ("body", "seed")),
    ({"seed": "42"}, ("body", "seed")),
    ({"seed": 1.5}, ("body", "seed")),
    ({"age": 130}, ("body", "age")),
    ({"age": -1}, ("body", "age")),
    ({"gender": "other"}, ("body", "gender")),
    ({"style_mixing": {"content_seed": 1}}, ("body", "style_mixing", "style_seed")),
    ({"style_mixing": {"content_seed": 1, "style_seed": 2, "layers": "3-99"}}, ("body", "style_mixing", "layers")),
    ({"style_mixing": {"content_seed": 1, "style_seed": 2, "layers": "nose"}}, ("body", "style_mixing", "layers")),
    ({"style_mixing": {"content_seed": 1, "style_seed": 2, "weight": 1}}, ("body", "style_mixing", "weight")),
    ({"style_mixing": {"content_seed": 1, "style_seed": 2}, "seed": 4}, ("body", "seed")),
]


@pytest.mark.parametrize("body, loc", BAD_FIELDS, ids=[str(b) for b, _ in BAD_FIELDS])
def test_bad_field_is_422(client, body, loc):
    r = client.post("/v1/faces/generate", json=body)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(tuple(e["loc"]) == loc and e["msg"] for e in errors), errors


@pytest.mark.parametrize("content", [b"{", b"[1, 2]", b'"seed"'])
def test_malformed_json_is_422(client, content):
    r = client.post("/v1/faces/generate", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_oversized_body_is_413(client):
    big = b'{"seed": 1, "pad": "' + b"a" * (70 * 1024) + b'"}'
    r = client.post("/v1/faces/generate", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = client.post("/v1/faces/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert _generate(client, seed=1)["seed"] == 1  # the server is fine afterwards


def test_unknown_and_traversal_image_ids_are_404(live, client):
    good = _generate(client, seed=2)["image_url"]
    good_path = httpx.URL(good).path
    assert _raw_get(live.port, good_path) == 200
    for path in ["/v1/images/" + "A" * 22, "/v1/images/short", "/v1/images/" + "A" * 200,
                 "/v1/images/../../etc/passwd", "/v1/images/..%2F..%2Fetc%2Fpasswd",
                 "/v1/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/v1/images/..", "/v1/images/%2e%2e",
                 good_path + "/../../../etc/passwd", good_path + "%2F..%2F..%2Fetc%2Fpasswd", good_path + ".png",
                 "/v1/images/%00" + "A" * 21]:
        assert _raw_get(live.port, path) == 404, path


def test_folder_store_serves_only_its_own_files(tiny_model, tmp_path):
    store_dir, secret = tmp_path / "images", tmp_path / "secret.png"
    store_dir.mkdir()
    secret.write_bytes(b"not for you")
    planted = store_dir / ("B" * 22 + ".png")  # looks like an id, but this store never made it
    planted.write_bytes(b"planted")
    config = ServerConfig(model=str(tiny_model), device="cpu", max_batch=2, store_dir=str(store_dir), store_ttl_s=3)
    with LiveServer(config) as server, httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as c:
        resp = _generate(c, seed=4, format="jpeg")
        image_id = resp["image_url"].rsplit("/", 1)[1]
        assert (store_dir / f"{image_id}.jpg").is_file()
        assert _fetch(c, resp["image_url"]).content == (store_dir / f"{image_id}.jpg").read_bytes()
        for path in ["/v1/images/" + "B" * 22, "/v1/images/..%2Fsecret.png", "/v1/images/..%2Fsecret",
                     "/v1/images/%2e%2e%2fsecret.png"]:
            assert _raw_get(server.port, path) == 404, path
        time.sleep(3.2)  # past the TTL
        assert c.get(resp["image_url"]).status_code == 404
        assert not (store_dir / f"{image_id}.jpg").exists()
    assert secret.read_bytes() == b"not for you" and planted.read_bytes() == b"planted"


def test_unconditional_model_refuses_age_and_gender(tmp_path):
    torch.manual_seed(4)
    path = tmp_path / "uncond.safetensors"
    save_generator(Generator(GeneratorConfig.preset("tiny32")), path)
    config = ServerConfig(model=str(path), device="cpu", max_batch=1)
    with LiveServer(config) as server, httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as c:
        assert c.get("/healthz").json()["conditional"] is False
        for body, field in (({"seed": 1, "age": 30}, "age"), ({"seed": 1, "gender": "male"}, "gender")):
            r = c.post("/v1/faces/generate", json=body)
            assert r.status_code == 422
            assert r.json()["detail"][0]["loc"] == ["body", field] and "unconditional" in r.json()["detail"][0]["msg"]
        assert c.post("/v1/faces/generate", json={"seed": 1}).status_code == 200


# ---------------------------------------------------------------------------------------------------------------------
# Concurrency, batching, back-pressure


def test_concurrent_requests_are_batched_and_equal_sequential(live, client):
    bodies = [{"seed": 100 + i, "format": ("png", "jpeg", "webp")[i % 3], "resolution": ("32x32", "40x40")[i % 2],
               "age": 20 + 3 * i} for i in range(16)]
    sequential = [_generate_and_fetch(live.base_url, b) for b in bodies]  # each alone in its forward pass
    batches_before = client.get("/healthz").json()["batches"]
    with ThreadPoolExecutor(len(bodies)) as pool:
        with _worker_blocked(live):
            futures = [pool.submit(_generate_and_fetch, live.base_url, b) for b in bodies]
            _wait_until(lambda: _waiting(client) == len(bodies))
        concurrent = [f.result(timeout=TIMEOUT) for f in futures]
    health = client.get("/healthz").json()
    assert health["largest_batch"] == MAX_BATCH  # 16 requests waiting -> full batches of 8
    assert health["batches"] - batches_before <= 3
    for i, (seq, conc) in enumerate(zip(sequential, concurrent)):
        assert seq[1] == conc[1], f"latent {i} differs"
        assert seq[0] == conc[0], f"image {i} differs between batched and unbatched generation"


def test_full_queue_is_503_with_retry_after(live):
    n = MAX_QUEUE + MAX_BATCH + 6
    statuses, headers = [], []

    def post(seed):
        r = httpx.post(f"{live.base_url}/v1/faces/generate", json={"seed": seed}, timeout=TIMEOUT)
        statuses.append(r.status_code)
        headers.append(r.headers)

    with ThreadPoolExecutor(n) as pool:
        with _worker_blocked(live):
            futures = [pool.submit(post, s) for s in range(n)]
            with httpx.Client(base_url=live.base_url, timeout=TIMEOUT) as c:
                # every request is either waiting (queue or blocked pass) or already refused
                _wait_until(lambda: _waiting(c) + len(statuses) == n)
        for f in futures:
            f.result(timeout=TIMEOUT)
    assert set(statuses) == {200, 503}
    assert statuses.count(503) >= n - MAX_QUEUE - MAX_BATCH
    assert all(h["retry-after"] == "1" for s, h in zip(statuses, headers) if s == 503)


# ---------------------------------------------------------------------------------------------------------------------
# Library pieces


@pytest.fixture(scope="module")
def tiny_g(tiny_model) -> Generator:
    return load_generator(tiny_model)


def test_fixed_batch_rows_do_not_depend_on_neighbours(tiny_g):
    """The property batching relies on: with a fixed batch size, a row's output ignores its position and the
    other rows (float for float), so padding every pass to ``max_batch`` makes images batch-independent."""
    ws = torch.cat([seed_ws(tiny_g, FaceSpec(seed=s)) for s in range(12)])
    with torch.no_grad():
        ref = tiny_g.synthesis(ws[:MAX_BATCH], noise_mode="const")
        other = tiny_g.synthesis(torch.cat([ws[4:12].flip(0)[:5], ws[:3]]), noise_mode="const")  # rows 0-2 last
    for i in range(3):
        assert torch.equal(other[5 + i], ref[i])
    alone = render_faces(tiny_g, ws[1:2], batch=MAX_BATCH)
    together = render_faces(tiny_g, ws[:11], batch=MAX_BATCH)  # one full pass of 8, one padded pass of 3
    assert np.array_equal(alone[0], together[1])
    assert together.shape == (11, NATIVE, NATIVE, 3) and together.dtype == np.uint8


def test_png_encoding_matches_write_image(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    write_image(pixels, tmp_path / "x.png")
    assert encode_face(pixels, size=0, fmt="png") == (tmp_path / "x.png").read_bytes()
    big = Image.open(io.BytesIO(encode_face(pixels, size=64, fmt="png")))
    expected = np.asarray(Image.fromarray(pixels).resize((64, 64), Image.Resampling.LANCZOS))
    assert np.array_equal(np.asarray(big), expected)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("in_folder", [False, True])
def test_store_bounds_and_ids(tmp_path, in_folder):
    clock = _Clock()
    store = ImageStore(max_items=3, max_bytes=100, ttl_s=10, directory=tmp_path if in_folder else None, clock=clock)
    ids = [store.put(bytes([i]) * 20, "image/png") for i in range(3)]
    assert all(is_image_id(i) for i in ids) and len(set(ids)) == 3
    assert store.get(ids[0]).data == bytes([0]) * 20
    ids.append(store.put(b"x" * 20, "image/webp"))  # 4th item: the oldest goes
    assert store.get(ids[0]) is None and len(store) == 3
    ids.append(store.put(b"y" * 70, "image/jpeg"))  # 130 bytes > 100: evict until it fits
    assert [store.get(i) is not None for i in ids] == [False, False, False, True, True] and store.nbytes == 90
    clock.now = 9.9
    assert store.get(ids[4]).expires_in_s == pytest.approx(0.1)
    clock.now = 10.0
    assert store.get(ids[4]) is None and len(store) == 0
    with pytest.raises(ValueError):
        store.put(b"z" * 101, "image/png")
    for bad in ("../../etc/passwd", "", "A" * 21, "A" * 23, "A" * 21 + "/", "A" * 21 + "."):
        assert store.get(bad) is None and not is_image_id(bad)
    keep = store.put(b"k", "image/png")
    store.close()
    assert store.get(keep) is None
    if in_folder:
        assert list(tmp_path.iterdir()) == []


def test_server_config_validation():
    with pytest.raises(ConfigError):
        ServerConfig(max_batch=0)
    with pytest.raises(ConfigError):
        ServerConfig(port=70000)
    with pytest.raises(ConfigError):
        ServerConfig(store_ttl_s=0)


def test_cli_serve_is_registered():
    res = CliRunner().invoke(main, ["serve", "--help"])
    assert res.exit_code == 0 and "--max-batch" in res.output and "--store-ttl" in res.output
    assert CliRunner().invoke(main, ["serve", "--max-batch", "0"]).exit_code == 2
