"""Gender and age as linear directions in W (InterFaceGAN, Shen et al. 2020), for generators without labels.

The shipped generator is conditioned on gender and age, so the swap imposes them through the mapping network. An
external unconditional generator (official FFHQ weights, say) has no such input; for it, ``fit_directions`` samples
faces, labels them with an attribute judge, and fits in W:

* gender: a logistic regression, ``logit P(female) = w . n_g + b_g`` (``n_g`` a unit normal, scaled);
* age: a least-squares line, ``age = w . n_a * k_a + a_0``, with ``n_a`` made orthogonal to ``n_g`` (InterFaceGAN's
  conditional manipulation) so that moving along age does not change gender.

``impose`` then moves a new identity's w along both directions until its predicted gender logit and age equal the
original's, which are read off the original's inverted w with the same linear models. The result is saved beside the
generator as ``<name>.directions.safetensors`` and loaded with it.

For any generator with directions, conditional ones included, ``steer_attributes`` then moves each new identity
along them, in closed loop with the attribute network reading the rendered face, until that reads the original's
gender and age: labels and linear models only get near (the shipped generator draws 10-17-year-olds as young
adults, and the encoder's kept rows pull every face toward the mean adult).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ModelError

__all__ = ["AttributeDirections", "fit_directions", "directions_path", "load_directions", "save_directions",
           "steer_attributes"]


@dataclass(frozen=True)
class AttributeDirections:
    """Linear attribute models in W (``w_dim`` vectors, float32)."""

    gender: torch.Tensor  # [w_dim], logit P(female) = w . gender + gender_bias
    gender_bias: float
    age: torch.Tensor  # [w_dim], age in years = w . age + age_bias; orthogonal to ``gender``
    age_bias: float
    samples: int = 0  # generated faces the models were fitted on
    gender_accuracy: float = float("nan")  # on a held-out fifth of them
    age_mae: float = float("nan")  # years, on the held-out fifth

    def scores(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted (female logit, age) of ``w`` ``[..., w_dim]``."""
        return w @ self.gender.to(w) + self.gender_bias, w @ self.age.to(w) + self.age_bias

    def impose(self, w: torch.Tensor, female_logit: torch.Tensor | float, age: torch.Tensor | float) -> torch.Tensor:
        """Move ``w`` ``[..., w_dim]`` so that its predicted female logit and age equal the targets.

        Exact for both at once: the age direction is orthogonal to the gender direction, so the two moves do not
        disturb each other.
        """
        g, a = self.gender.to(w), self.age.to(w)
        s_g, s_a = self.scores(w)
        w = w + ((torch.as_tensor(female_logit).to(w) - s_g) / g.dot(g))[..., None] * g
        return w + ((torch.as_tensor(age).to(w) - s_a) / a.dot(a))[..., None] * a


def _logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 300) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method (x ``[N, D]`` standardised inside, y in {0, 1})."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], 1)
    beta = np.zeros(z.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(z @ beta, -30, 30)))
        grad = z.T @ (p - y) + l2 * np.r_[beta[:-1], 0]
        hess = (z * (p * (1 - p))[:, None]).T @ z + l2 * np.eye(len(beta))
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    coef = beta[:-1] / sd
    return coef, float(beta[-1] - (mu * coef).sum())


def _ridge(x: np.ndarray, y: np.ndarray, l2: float = 1e-1) -> tuple[np.ndarray, float]:
    mu, ym = x.mean(0), y.mean()
    xc = x - mu
    coef = np.linalg.solve(xc.T @ xc + l2 * np.eye(x.shape[1]), xc.T @ (y - ym))
    return coef, float(ym - mu @ coef)


def fit_directions(sample_w: Callable[[int, int], torch.Tensor], render: Callable[[torch.Tensor], np.ndarray],
                   label: Callable[[np.ndarray], tuple[float, float] | None], *, samples: int = 2000,
                   batch: int = 16, seed: int = 0, progress: Callable[[int], None] | None = None
                   ) -> AttributeDirections:
    """Fit gender and age directions from generated, judged faces.

    Args:
        sample_w: ``(n, seed) -> [n, w_dim]`` float32 w codes (mapping of random z; no truncation).
        render: ``[n, w_dim] -> [n, H, W, 3]`` uint8 images of those codes.
        label: an image -> ``(P(female), age in years)``, or None when the judge finds no face (sample skipped).
        samples: faces to generate.
    """
    ws, ys_g, ys_a = [], [], []
    for i in range(0, samples, batch):
        n = min(batch, samples - i)
        w = sample_w(n, seed + i)
        for wi, img in zip(w, render(w)):
            lab = label(img)
            if lab is not None:
                ws.append(wi.float().cpu().numpy())
                ys_g.append(lab[0])
                ys_a.append(lab[1])
        if progress:
            progress(n)
    if len(ws) < 20:
        raise ModelError(f"only {len(ws)} of {samples} generated faces could be judged; cannot fit directions")
    x, g, a = np.stack(ws).astype(np.float64), np.asarray(ys_g) > 0.5, np.asarray(ys_a, np.float64)
    if g.all() or not g.any():
        raise ModelError("the judge saw only one gender among the generated faces; cannot fit a gender direction")
    rng = np.random.default_rng(seed)
    test = rng.permutation(len(x))[: max(len(x) // 5, 1)]
    train = np.setdiff1d(np.arange(len(x)), test)

    def fit(idx):
        cg, bg = _logistic(x[idx], g[idx].astype(np.float64))
        ca, ba = _ridge(x[idx], a[idx])
        # age along the part of its direction orthogonal to gender; re-fit its slope and bias on that direction
        u = cg / np.linalg.norm(cg)
        na = ca - (ca @ u) * u
        na /= np.linalg.norm(na)
        proj = x[idx] @ na
        k, a0 = np.polyfit(proj, a[idx], 1)
        return cg, bg, na * k, float(a0)

    cg, bg, ca, ba = fit(train)
    acc = float(((x[test] @ cg + bg > 0) == g[test]).mean())
    mae = float(np.abs(x[test] @ ca + ba - a[test]).mean())
    cg, bg, ca, ba = fit(np.arange(len(x)))
    return AttributeDirections(torch.tensor(cg, dtype=torch.float32), bg, torch.tensor(ca, dtype=torch.float32), ba,
                               samples=len(x), gender_accuracy=acc, age_mae=mae)


def directions_path(generator_path: str | Path) -> Path:
    """Where a generator's directions live: ``ffhq.safetensors`` -> ``ffhq.directions.safetensors``."""
    p = Path(generator_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".directions.safetensors")


def save_directions(d: AttributeDirections, path: str | Path) -> None:
    from safetensors.torch import save_file

    meta = {"gender_bias": d.gender_bias, "age_bias": d.age_bias, "samples": d.samples,
            "gender_accuracy": d.gender_accuracy, "age_mae": d.age_mae}
    save_file({"gender": d.gender.contiguous(), "age": d.age.contiguous()}, str(path),
              metadata={"deid": json.dumps(meta)})


def load_directions(path: str | Path, w_dim: int | None = None) -> AttributeDirections:
    """Load saved directions; ``w_dim`` checks that they fit the generator.

    Raises:
        ModelError: missing, malformed or of another width.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["deid"])
            g, a = f.get_tensor("gender").float(), f.get_tensor("age").float()
    except (OSError, KeyError, ValueError, SafetensorError) as exc:
        raise ModelError(f"{path}: not a directions file ({exc})") from exc
    if g.ndim != 1 or g.shape != a.shape or (w_dim is not None and g.shape[0] != w_dim):
        raise ModelError(f"{path}: directions of shape {list(g.shape)} do not fit a generator with w_dim {w_dim}")
    return AttributeDirections(g, float(meta["gender_bias"]), a, float(meta["age_bias"]), int(meta.get("samples", 0)),
                               float(meta.get("gender_accuracy", float("nan"))), float(meta.get("age_mae", float("nan"))))


# Steering's first step: the change of the attribute network's reading per unit move of every W+ row along the unit
# direction, on swaps of the shipped generator (80 training faces, coarse rows kept from the encoder; session 13):
# log1p(age) +0.21 / -0.17 per unit of the age direction (and the female logit -1.2: older reads more male), female
# logit +1.2 / -1.1 per unit of the gender direction. Later steps use each face's own measured response (secant).
AGE_GAIN = 0.2
GENDER_GAIN = 1.1
STEP_MAX = 2.0  # largest move per step, in units along a direction (a W row's norm is ~6)
SHIFT_MAX = 4.0  # largest total move along each direction
AGE_TOLERANCE = 0.1  # log1p(age) error left alone (~10 %: the judges themselves err by more)
# female logit a face should reach on its side (P 0.98): a new face read as plainly male or female by deid's attribute
# network is read so by other estimators too. benchmarks/swap.py on 500 held-out faces (session 14, paired: same
# faces and seeds), margin 2 / 3 / 4 / 6: gender agreement 0.857 / 0.870 / 0.899 / 0.904 (10-17 0.767 / 0.765 /
# 0.815 / 0.850, 18+ 0.905 / 0.928 / 0.943 / 0.943), age MAE 5.6 / 5.4 / 5.6 / 5.9, pose error 0.119 / 0.121 / 0.123
# / 0.127, fallbacks 0.330 / 0.336 / 0.330 / 0.330, re-identification 0 in all; 6 draws features harder by eye
GENDER_MARGIN = 4.0


@torch.no_grad()
def steer_attributes(ws: torch.Tensor, measure: Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]],
                     female: float, age: float, directions: AttributeDirections, steps: int
                     ) -> tuple[torch.Tensor, np.ndarray]:
    """Move new identities ``ws`` ``[N, num_ws, w_dim]`` along the gender and age directions until ``measure`` (W+
    ``[N, ...]`` -> P(female) ``[N]``, age in years ``[N]``: an attribute network on the rendered faces) reads the
    target gender (``female`` >= 0.5: female) and age on them, in at most ``steps`` steps.

    Every W+ row moves by the same amount, the kept rows too: an encoder's rows regress toward the mean adult (a
    two-year-old's inverted coarse rows draw a teenager's head), and the mapping network of the shipped generator
    draws the labels 10-17 as young adults. Each step is a Newton step on log1p(age) and on the female logit with
    the gains above (``AGE_GAIN``; after the first step, each face's measured response where it is clear), clipped
    to ``STEP_MAX`` units and ``SHIFT_MAX`` in all; a step that reads worse is not returned. Returns the W+ of the
    step whose reading came closest, per face, and that step ``[N]`` (the index of the ``measure`` call, 0 = the
    faces as given), so that the caller can keep what it rendered there.
    """
    g_dir = directions.gender / directions.gender.norm()
    a_dir = directions.age / directions.age.norm()
    g_dir, a_dir = g_dir.to(ws), a_dir.to(ws)
    n = ws.shape[0]
    target_code = float(np.log1p(max(age, 0.0)))
    sign = 1.0 if female >= 0.5 else -1.0
    gain_a, gain_g = np.full(n, AGE_GAIN), np.full(n, GENDER_GAIN)
    total_a, total_g = np.zeros(n), np.zeros(n)
    best_ws, best_err, best_step = ws.clone(), np.full(n, np.inf), np.zeros(n, dtype=np.int64)
    last_a = last_g = last_code = last_logit = None
    for step in range(steps + 1):
        p, years = measure(ws)
        p = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
        code, logit = np.log1p(np.clip(np.asarray(years, np.float64), 0, 120)), np.log(p / (1 - p))
        err_a = target_code - code
        err_g = np.maximum(GENDER_MARGIN - sign * logit, 0.0) * sign  # logit still to go (0 once past the margin)
        err = np.abs(err_a) + np.abs(err_g) / 10.0
        better = err < best_err
        best_err[better] = err[better]
        best_ws[better] = ws[better]
        best_step[better] = step
        if step == steps:
            break
        if last_a is not None:  # secant: this face's own response to the last step (kept when it was too small to read)
            moved = np.abs(last_a) > 0.2
            seen = (code - last_code)[moved] / last_a[moved]
            gain_a[moved] = np.where(seen > 0.03, np.clip(seen, 0.05, 1.0), gain_a[moved])
            moved = np.abs(last_g) > 0.2
            seen = (logit - last_logit)[moved] / last_g[moved]
            gain_g[moved] = np.where(seen > 0.2, np.clip(seen, 0.2, 5.0), gain_g[moved])
        da = np.where(np.abs(err_a) > AGE_TOLERANCE, np.clip(err_a / gain_a, -STEP_MAX, STEP_MAX), 0.0)
        dg = np.clip(err_g / gain_g, -STEP_MAX, STEP_MAX)
        da = np.clip(total_a + da, -SHIFT_MAX, SHIFT_MAX) - total_a
        dg = np.clip(total_g + dg, -SHIFT_MAX, SHIFT_MAX) - total_g
        if not (np.abs(da) > 1e-3).any() and not (np.abs(dg) > 1e-3).any():
            break
        total_a += da
        total_g += dg
        last_a, last_g, last_code, last_logit = da, dg, code, logit
        ws = ws + torch.from_numpy(da).to(ws)[:, None, None] * a_dir \
            + torch.from_numpy(dg).to(ws)[:, None, None] * g_dir
    return best_ws, best_step
