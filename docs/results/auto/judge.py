"""The pre-registered judgement of mode=auto (docs/results/auto/README.md) on one report folder."""
import csv, sys, collections
rep = sys.argv[1]
S = list(csv.DictReader(open(f"{rep}/summary.csv")))
P = list(csv.DictReader(open(f"{rep}/paired.csv")))
R = list(csv.DictReader(open(f"{rep}/results.csv")))
CHANCE, MARGIN = 0.1, 0.05
key = lambda r: (r["method"], round(float(r["compression"]), 2))
auto = {key(p): p for p in P if p["versus"] == "auto - topk"}
worse = [(k, round(float(p["diff"]), 3), round(float(p["ci"]), 3)) for k, p in sorted(auto.items()) if p["verdict"] == "-1"]
better = [k for k, p in sorted(auto.items()) if p["verdict"] == "1"]
col = collections.defaultdict(list)
for r in R:
    if r["mode"] == "topk" and r["method"] in {m for m, _ in auto}:
        col[key(r)].append(int(r["collapsed_layers"]) > 0)
learn = collections.defaultdict(bool)
for r in S:
    if r["method"] != "dense" and float(r["mean"]) - float(r["ci95"]) > CHANCE + MARGIN:
        learn[key(r)] = True
target = [k for k, v in sorted(col.items()) if sum(v) * 2 > len(v) and learn[k]]
met = [k for k in target if k in better]
print(f"cells {len(auto)}; auto significantly worse than top-k: {len(worse)} {worse}")
print(f"auto significantly better: {len(better)} {better}")
print(f"criterion 2 cells (top-k collapses a layer in most seeds, some mode learns): {len(target)}; auto better in {len(met)}")
print("  missed:", [k for k in target if k not in met])
