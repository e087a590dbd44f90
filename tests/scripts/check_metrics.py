#!/usr/bin/env python3
"""An independent check of limaml's metrics: recomputes AUC, GAUC (impressions weighting) and
NDCG@10 (within each user's query set) from `limaml export`'s predictions.csv, in plain Python,
and compares them with the numbers `limaml run --json` printed (methods.<m>.per_seed.<seed>).

Usage: check_metrics.py EXPORT_DIR RUN_JSON [TOLERANCE]
Exits 1 and names every mismatch when one is larger than TOLERANCE (default 1e-6).
"""
import csv
import json
import math
import sys
from collections import defaultdict


def auc(pairs):
    """Mann-Whitney U over (score, label) pairs, ties counted one half."""
    ordered = sorted(pairs, key=lambda p: p[0])
    positives = sum(1 for _, y in ordered if y)
    negatives = len(ordered) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2.0  # ranks i+1 .. j share their mean
        rank_sum += mid_rank * sum(1 for _, y in ordered[i:j] if y)
        i = j
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def ndcg_at(rows, k):
    """rows: (score, row id, label); ordered by score descending, then row id ascending."""
    ordered = sorted(rows, key=lambda r: (-r[0], r[1]))
    positives = sum(1 for r in rows if r[2])
    if positives == 0:
        return None
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(ordered[:k]) if r[2])
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, positives)))
    return dcg / ideal


def main():
    export_dir, run_json = sys.argv[1], sys.argv[2]
    tolerance = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-6
    by_run = defaultdict(list)  # (method, seed) -> [(score, row, label, task)]
    with open(f"{export_dir}/predictions.csv", newline="") as f:
        for r in csv.DictReader(f):
            by_run[(r["method"], r["seed"])].append(
                (float(r["score"]), int(r["row"]), float(r["label"]) > 0.5, int(r["task"]))
            )
    with open(run_json) as f:
        methods = json.load(f)["methods"]
    mismatches, checked = [], 0
    for (method, seed), rows in sorted(by_run.items()):
        tasks = defaultdict(list)
        for score, row, label, task in rows:
            tasks[task].append((score, row, label))
        ours = {"auc": auc([(s, y) for s, _, y, _ in rows])}
        weighted, weight = 0.0, 0
        ndcgs = []
        for members in tasks.values():
            a = auc([(s, y) for s, _, y in members])
            if a is not None:
                weighted += a * len(members)
                weight += len(members)
            n = ndcg_at(members, 10)
            if n is not None:
                ndcgs.append(n)
        ours["gauc"] = weighted / weight if weight else None
        ours["ndcg@10"] = sum(ndcgs) / len(ndcgs) if ndcgs else None
        theirs = methods[method]["per_seed"][seed]
        for name, value in ours.items():
            checked += 1
            reported = theirs.get(name)
            if value is None or reported is None or abs(value - reported) > tolerance:
                mismatches.append(f"{method} seed {seed} {name}: python {value}, limaml {reported}")
    for line in mismatches:
        print("MISMATCH", line)
    print(f"checked {checked} numbers over {len(by_run)} (method, seed) pairs; {len(mismatches)} mismatches")
    sys.exit(1 if mismatches or checked == 0 else 0)


if __name__ == "__main__":
    main()
