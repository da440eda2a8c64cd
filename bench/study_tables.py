"""The study presets' tables (issues 14 and 20): one Markdown table per branch and dataset.

Reads `results/summary.csv` and each experiment's `eval/` (and, for multilevel, its
`fg_iou.json`) after `snakemake --config preset=study` (or `study48`); prints every study
experiment's Hungarian mIoU and pixel accuracy with their 95 % intervals over images, and the
paired interval of the difference in mIoU from the branch's reference row (`usseg compare`),
marked `*` when it excludes 0.

    python bench/study_tables.py            # from the workflow root
    python bench/study_tables.py --study48  # choose on VOC-48 val, confirm on train and SUIM
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from usseg.evaluation.compare import compare, eval_folder
from usseg.evaluation.intervals import Settings

# branch -> (reference experiment, the experiments compared with it); one group per dataset
GROUPS = {
    "multilevel (VOC sample)": ("st-ml", ["st-ml", "st-ml-nocrf", "st-ml-majority", "st-ml-softvote",
                                          "st-ml-attention", "st-ml-dataset", "st-ml-dataset-image", "st-ml-448",
                                          "st-kmeans"]),
    "datus2 (VOC sample)": ("st-d2", ["st-d2", "st-d2-448", "st-d2-tau2", "st-d2-res2", "st-d2-fillmean",
                                      "st-kmeans"]),
    "datus2 (SUIM sample)": ("st-d2-suim", ["st-d2-suim", "st-d2-suim-448", "st-d2-suim-res2", "st-kmeans-suim"]),
    "context_aware (VOC sample)": ("st-ca-vit", ["st-ca-vit", "st-ca-vit-picie", "st-ca-resnet18", "st-kmeans"]),
}
# study48: each default chosen on VOC-48's val part, confirmed on its train part and on SUIM
PARTS = {"val": "VOC-48 val, 22 images: choose", "train": "VOC-48 train, 26 images: confirm",
         "suim": "SUIM sample, 8 images: confirm"}  # fmt: skip
GROUPS48 = {
    **{f"multilevel ({title})": (f"s48-ml-{part}", [f"s48-ml{v}-{part}" for v in ("", "-majority", "-softvote",
                                                                                  "-nocrf")] + [f"s48-kmeans-{part}"])
       for part, title in PARTS.items()},
    **{f"datus2 ({title})": (f"s48-d2-{part}", [f"s48-d2{v}-{part}" for v in ("", "-res2", "-tau2", "-fillmean")]
                             + [f"s48-kmeans-{part}"])
       for part, title in PARTS.items()},
    **{f"spectral ({PARTS[part]})": (f"s48-spectral-{part}", [f"s48-spectral{v}-{part}" for v in ("", "-seg4")]
                                     + [f"s48-kmeans-{part}"])
       for part in ("val", "train")},
}  # fmt: skip
LEVELS = ("dataset", "category", "image", "consistent", "refined")


def interval(row: dict[str, str], score: str) -> str:
    return f"{float(row[score]):.1f} [{float(row[score + '_ci_low']):.1f}, {float(row[score + '_ci_high']):.1f}]"


def difference(row: dict[str, str], ref: dict[str, str], settings: Settings) -> str:
    if row is ref:
        return "reference"
    a, b = (eval_folder(r["experiment"], Path("results")) for r in (row, ref))
    found = [r for r in compare(a, b, settings)
             if (r["protocol"], r["matching"], r["score"]) == ("default", "hungarian", "mIoU")]  # fmt: skip
    if not found:
        return "n/a"
    d = found[0]
    mark = " *" if d["beyond_noise"] else ""
    return f"{100 * d['difference']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]{mark}"


def fg_ious(row: dict[str, str]) -> str:
    path = Path("results/multilevel") / row["experiment"] / "fg_iou.json"
    if not path.is_file():
        return " | ".join("" for _ in LEVELS)
    iou = json.loads(path.read_text())["iou"]
    return " | ".join(f"{100 * iou[k]:.1f}" if k in iou else "" for k in LEVELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", default="results/summary.csv", help="the workflow's summary table")
    parser.add_argument("--study48", action="store_true", help="the study48 preset's tables (choose / confirm)")
    args = parser.parse_args()
    with open(args.summary, newline="") as fh:
        rows = {r["experiment"]: r for r in csv.DictReader(fh) if r["protocol"] == "default"}
    settings = Settings(method="jackknife", level=0.95)
    for title, (ref_name, names) in (GROUPS48 if args.study48 else GROUPS).items():
        present = [rows[n] for n in names if n in rows]
        if ref_name not in rows or not present:
            continue
        ref = rows[ref_name]
        multilevel = title.startswith("multilevel")
        extra = " | fg IoU " + " | ".join(LEVELS) if multilevel else ""
        print(f"\n### {title}\n")
        print(f"| experiment | image size | CRF | mIoU | pixel acc. | mIoU − {ref_name} (paired){extra} |")
        print("|---" * (5 + 1 + (len(LEVELS) if multilevel else 0)) + "|")
        for row in present:
            cells = [row["experiment"], row["image_size"], row["crf"], interval(row, "hungarian_mIoU"),
                     interval(row, "hungarian_pixel_accuracy"), difference(row, ref, settings)]  # fmt: skip
            line = " | ".join(cells)
            if multilevel:
                line += " | " + fg_ious(row)
            print(f"| {line} |")


if __name__ == "__main__":
    main()
