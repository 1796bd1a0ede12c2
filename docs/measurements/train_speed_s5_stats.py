import json
import statistics
import sys

name, path = sys.argv[1], sys.argv[2]
lines = open(path).read().splitlines()
inner = [json.loads(line.split("| train_inner |", 1)[1]) for line in lines if "| train_inner |" in line]
s = inner[3:] or inner
wps = statistics.median(float(x["wps"]) for x in s) if s else 0
ups = statistics.median(float(x["ups"]) for x in s) if s else 0
free = min((float(x["gb_free"]) for x in inner if "gb_free" in x), default=float("nan"))
curve = " ".join(f"{float(x['loss']):.3f}" for x in inner)
print(f"{name:<10} wps {wps:>10,.0f}  ups {ups:.2f}  min_gb_free {free:.1f}  loss: {curve}")
