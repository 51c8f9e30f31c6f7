"""FID and KID of generators within age groups: how real the faces of one age are, against the real faces of it.

    python benchmarks/fid_ages.py --data cache/utkface-deid128.safetensors [--models a.safetensors,b.safetensors]
                                  [--ages 0-2,3-17] [--max-per-group 3000] [--threads 1] [--json out.json]
                                  [--real-cache runs/fid-ages.npz]

The whole-data FID (``benchmarks/fid.py``) is dominated by adults (UTKFace is 82 % 18+), so it hardly moves with the
quality of children's faces. Here each group's real faces (every prepared face whose label lies in the range,
inclusive; at most ``--max-per-group``, evenly spaced) are compared with as many generated faces whose labels are
drawn from those faces' labels (truncation 1, random noise, fixed seed, as ``fid.py``). Groups of a few thousand
faces bias FID upward against FID-10k, so compare models within a group and read KID (unbiased; mean +- std over
100 random subsets of half the group, at most 1,000) beside it. The real features take ~2.5 min per 1,000 faces on one CPU thread; ``--real-cache`` keeps
them, each group apart (checked against the data's fingerprint, the group's range, the cap and the resolution).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _heldout import parse_groups
from deid.eval.fid import InceptionFeatures, data_fingerprint, feature_stats, fid_from_stats, generated_features, kid
from deid.io.weights import load_generator
from deid.train.data import FaceDataset


def real_features(data: Path, resolution: int, groups: list[tuple[str, float, float]], cap: int,
                  inception: InceptionFeatures, cache: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per group: (Inception features ``[N, 2048]``, labels ``[N, c]``) of its real faces. ``cache`` keeps each
    group's apart (keyed by the data's fingerprint, the resolution, the cap and the group's range), so a run with
    other groups adds to it instead of replacing it."""
    base = {"data": data_fingerprint(data), "resolution": resolution, "cap": cap}
    keys = {name: json.dumps(base | {"ages": [lo, hi]}, sort_keys=True) for name, lo, hi in groups}
    stored: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            stored = {k: z[k] for k in z.files}
    out = {}
    for name, _, _ in groups:
        if str(stored.get(f"key_{name}", "")) == keys[name]:
            out[name] = (stored[f"feats_{name}"], stored[f"labels_{name}"])
    todo = [g for g in groups if g[0] not in out]
    if not todo:
        return out
    ds = FaceDataset(data, resolution)
    for name, lo, hi in todo:
        idx = np.flatnonzero((ds.age >= lo) & (ds.age <= hi))
        if len(idx) > cap:
            idx = idx[np.linspace(0, len(idx) - 1, cap).round().astype(int)]
        t0 = time.time()
        feats = inception.batched(ds.images[torch.from_numpy(idx)], 32)
        out[name] = (feats, ds.c[torch.from_numpy(idx)].numpy().astype(np.float32))
        print(f"real {name}: {len(idx)} faces, {time.time() - t0:.0f} s", flush=True)
        stored |= {f"key_{name}": np.array(keys[name]), f"feats_{name}": out[name][0], f"labels_{name}": out[name][1]}
    if cache is not None:
        stored.pop("key", None)  # the single key of caches written before groups were kept apart
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **stored)
        tmp.replace(cache)
    return {g[0]: out[g[0]] for g in groups}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="prepared data (deid data prepare)")
    ap.add_argument("--models", default="", help="comma-separated generators (default: the shipped one)")
    ap.add_argument("--ages", default="0-2,3-17", help="age groups, e.g. 0-2,3-17,18-59,60+")
    ap.add_argument("--max-per-group", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-cache", default=None, help="file keeping the real faces' features between runs (.npz)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    groups = parse_groups(args.ages)
    inception = InceptionFeatures.load()
    models = [m for m in args.models.split(",") if m] or [None]
    res = load_generator(models[0]).img_resolution
    real = real_features(Path(args.data), res, groups, args.max_per_group, inception,
                         Path(args.real_cache) if args.real_cache else None)
    rows = []
    for path in models:
        G = load_generator(path)
        if G.img_resolution != res:
            raise SystemExit(f"{path}: {G.img_resolution} px, the first model is {res} px")
        for name, _, _ in groups:
            feats_r, labels = real[name]
            t0 = time.time()
            feats_f = generated_features(G, inception, labels, len(feats_r), seed=args.seed)
            mu_r, sig_r = feature_stats(feats_r)
            mu_f, sig_f = feature_stats(feats_f)
            k, k_std = kid(feats_r, feats_f, max_subset_size=min(1000, len(feats_r) // 2))  # halves: a spread
            rows.append({"model": path or "models/deid64.safetensors", "ages": name, "faces": len(feats_r),
                         "fid": fid_from_stats(mu_r, sig_r, mu_f, sig_f), "kid": k, "kid_std": k_std,
                         "seconds": time.time() - t0})
            print(f"fake {name}: {rows[-1]['model']} {rows[-1]['seconds']:.0f} s", flush=True)
    print(f"{'model':34s} {'ages':>6s} {'faces':>6s} {'FID':>7s} {'KID x1e3':>14s}")
    for r in rows:
        print(f"{r['model'][-34:]:34s} {r['ages']:>6s} {r['faces']:6d} {r['fid']:7.2f} "
              f"{r['kid'] * 1e3:7.2f} +- {r['kid_std'] * 1e3:4.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "seed": args.seed}, indent=2) + "\n")


if __name__ == "__main__":
    main()
