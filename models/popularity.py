#!/usr/bin/env python3
"""A bring-your-own-model example for limaml (exchange format 1; README, "Bring your own model").

Smoothed popularity with a user bias, in plain Python (no packages): the logit of a row is the
training log-odds plus an item term and a user term, each its smoothed log-odds minus the
global one. The user term also counts the rows of support.csv that belong to the scored row's
task (rows seen at serving time, not in training). Reads manifest.json, train.csv, support.csv
and eval.csv from the working folder; writes scores.csv (row,score).
"""

import csv
import json
import math
from collections import defaultdict


def logit(p):
    return math.log(p / (1.0 - p))


def main():
    with open("manifest.json") as f:
        manifest = json.load(f)
    assert manifest["format_version"] == 1, manifest["format_version"]
    smoothing = float(manifest["params"].get("smoothing", 20.0))
    user_weight = float(manifest["params"].get("user_weight", 1.0))

    positives, total = 0.0, 0
    item_counts = defaultdict(lambda: [0.0, 0])
    user_counts = defaultdict(lambda: [0.0, 0])
    with open("train.csv", newline="") as f:
        for row in csv.DictReader(f):
            label = float(row["label"])
            positives += label
            total += 1
            for counts in (item_counts[row["item"]], user_counts[row["user"]]):
                counts[0] += label
                counts[1] += 1
    prior = min(max(positives / max(total, 1), 1e-4), 1.0 - 1e-4)
    base = logit(prior)

    # Support rows are known only to their own task: count them per task, on top of training.
    task_counts = defaultdict(lambda: [0.0, 0])
    with open("support.csv", newline="") as f:
        for row in csv.DictReader(f):
            counts = task_counts[row["task"]]
            counts[0] += float(row["label"])
            counts[1] += 1

    def term(pos, n):
        return logit((pos + smoothing * prior) / (n + smoothing)) - base

    with open("eval.csv", newline="") as f, open("scores.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["row", "score"])
        for row in csv.DictReader(f):
            item_pos, item_n = item_counts.get(row["item"], (0.0, 0))
            user_pos, user_n = user_counts.get(row["user"], (0.0, 0))
            extra_pos, extra_n = task_counts.get(row["task"], (0.0, 0))
            z = base + term(item_pos, item_n) + user_weight * term(user_pos + extra_pos, user_n + extra_n)
            writer.writerow([row["row"], repr(1.0 / (1.0 + math.exp(-z)))])


if __name__ == "__main__":
    main()
