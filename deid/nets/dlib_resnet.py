"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a PyTorch module.

The dlib-bin wheel runs this network with its own convolutions, without BLAS: about 150 ms per face on one CPU
thread. The same weights in PyTorch (oneDNN) take a few milliseconds and batch, which is what makes an identity guard
affordable that checks several candidate faces per face. The descriptors agree with dlib's own to float precision
(``tests/test_identity.py``), so dlib's 0.6 same-person rule holds unchanged.

The weights are read straight from dlib's serialised file, which ``face-recognition-models`` ships (CC0): no pickle,
no conversion step. Only what the network needs is parsed: dlib writes the network from its input layer upward;
each convolution (``con_``), affine (``affine_``; dlib's inference form of batch norm) and fully connected
(``fc_``) layer carries one parameter tensor stored as little-endian float32. The layer layout is the one of dlib's
``dnn_face_recognition_ex.cpp`` (``anet_type``):

    input 150x150 RGB, (x - mean) / 256
    con 32 7x7 /2 -> affine -> relu -> max_pool 3x3 /2
    3 x res 32 | res_down 64 + 3 x res 64 | res_down 128 + 2 x res 128 | res_down 256 + 2 x res 256 | res_down 256
    global average -> fc 128 (no bias)

A residual block is ``relu(x + affine(con(relu(affine(con(x))))))``; a down block strides its first convolution
(padding 0, as dlib pads only stride-1 windows) and adds ``avg_pool 2x2 /2`` of ``x``. dlib adds tensors of
different sizes by aligning them at the top-left corner and zero-filling the rest (channels and pixels), which
this module reproduces.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError

__all__ = ["DlibFaceNet", "read_dlib_face_net", "CHIP_SIZE"]

CHIP_SIZE = 150
# residual stages from the input upward: (channels, blocks, first block strides)
_STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the overlap, aligned at the top-left corner, zero beyond the smaller one."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]
    out = a.new_zeros(shape)
    out[: a.shape[0], : a.shape[1], : a.shape[2], : a.shape[3]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2], : b.shape[3]] += b
    return out


class _Affine(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma[:, None, None] + self.beta[:, None, None]


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.aff1 = _Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.aff2 = _Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add(y, skip))


class DlibFaceNet(nn.Module):
    """128-D face descriptors of 150 px face chips (dlib's alignment, ``dlib.get_face_chips``)."""

    def __init__(self, mean_rgb: tuple[float, float, float] = (122.782, 117.001, 104.298)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.conv0 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.aff0 = _Affine(32)
        blocks, cin = [], 32
        for cout, n, down in _STAGES:
            for i in range(n):
                blocks.append(_Block(cin, cout, down and i == 0))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """``[N, 150, 150, 3]`` uint8 RGB chips -> ``[N, 128]`` float32 descriptors."""
        return self.embed(chips.permute(0, 3, 1, 2).float())

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable descriptors of ``[N, 3, 150, 150]`` float RGB chips in 0..255 -> ``[N, 128]``."""
        x = (x - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.aff0(self.conv0(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    @torch.inference_mode()
    def describe(self, chips: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Descriptors ``[N, 128]`` float32 of ``N`` chips (``[150, 150, 3]`` uint8 RGB each)."""
        arr = np.ascontiguousarray(np.stack(list(chips)) if not isinstance(chips, np.ndarray) else chips)
        if len(arr) == 0:
            return np.zeros((0, 128), np.float32)
        return self(torch.from_numpy(arr)).numpy()


class _Reader:
    """dlib's serialisation primitives, as far as the face network needs them."""

    def __init__(self, data: bytes, path: Path):
        self.d, self.p, self.path = data, 0, path

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.path}: not dlib's face recognition network ({what} at byte {self.p})")

    def int(self) -> int:
        """dlib's packed integer: a byte (count of value bytes | 0x80 when negative), then little-endian bytes."""
        if self.p >= len(self.d):
            raise self.fail("unexpected end")
        head = self.d[self.p]
        n = head & 0x0F
        if n > 8 or self.p + 1 + n > len(self.d):
            raise self.fail("bad integer")
        v = int.from_bytes(self.d[self.p + 1 : self.p + 1 + n], "little")
        self.p += 1 + n
        return -v if head & 0x80 else v

    def float(self) -> float:
        """dlib's portable float: mantissa (int64) * 2 ** exponent (int16)."""
        m, e = self.int(), self.int()
        return float(m) * 2.0**e

    def string(self) -> str:
        n = self.int()
        s = self.d[self.p : self.p + n]
        self.p += n
        return s.decode("latin-1")

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise self.fail("tensor version")
        n, k, r, c = (self.int() for _ in range(4))
        size = n * k * r * c
        if size <= 0 or self.p + 4 * size > len(self.d):
            raise self.fail("tensor size")
        out = np.frombuffer(self.d, "<f4", size, self.p).astype(np.float32)
        self.p += 4 * size
        return out

    def seek_layer(self, names: tuple[str, ...]) -> str:
        """Move to just after the next serialised layer name out of ``names``; return it."""
        pattern = re.compile(b"|".join(re.escape(bytes([0x01, len(n)]) + n.encode()) for n in names))
        m = pattern.search(self.d, self.p)
        if m is None:
            raise self.fail(f"no layer {'/'.join(names)}")
        self.p = m.end()
        return m.group()[2:].decode()


def read_dlib_face_net(path: str | Path) -> DlibFaceNet:
    """Build ``DlibFaceNet`` with the weights of dlib's serialised face network at ``path``.

    Raises:
        ModelError: the file is missing or is not that network.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    r = _Reader(path.read_bytes(), path)
    r.seek_layer(("input_rgb_image_sized",))
    mean = (r.float(), r.float(), r.float())
    if not all(0 < m < 256 for m in mean):
        raise r.fail("input means")
    net = DlibFaceNet(mean)
    convs: list[tuple[nn.Conv2d, _Affine]] = [(net.conv0, net.aff0)]
    for b in net.blocks:
        convs += [(b.conv1, b.aff1), (b.conv2, b.aff2)]
    with torch.no_grad():
        for conv, aff in convs:
            r.seek_layer(("con_4", "con_5"))
            params = r.tensor()
            filters, kr, kc, sy, sx, py, px = (r.int() for _ in range(7))
            w = conv.weight
            if (filters, kr, kc, sy, py) != (w.shape[0], w.shape[2], w.shape[3], conv.stride[0], conv.padding[0]) \
                    or params.size != w.numel() + filters:
                raise r.fail("unexpected convolution layout")
            conv.weight.copy_(torch.from_numpy(params[: w.numel()].reshape(w.shape)))
            conv.bias.copy_(torch.from_numpy(params[w.numel() :]))
            r.seek_layer(("affine_",))
            params = r.tensor()
            if params.size != 2 * filters:
                raise r.fail("unexpected affine layout")
            aff.gamma.copy_(torch.from_numpy(params[:filters]))
            aff.beta.copy_(torch.from_numpy(params[filters:]))
        r.seek_layer(("fc_2", "fc_"))
        outputs, inputs = r.int(), r.int()
        params = r.tensor()
        if (outputs, inputs) != (128, 256) or params.size < inputs * outputs:
            raise r.fail("unexpected fc layout")
        # dlib stores the matrix inputs x outputs (output = input @ W)
        net.fc.weight.copy_(torch.from_numpy(params[: inputs * outputs].reshape(inputs, outputs).T.copy()))
    return net.eval().requires_grad_(False)
