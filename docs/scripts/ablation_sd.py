"""Per-run SD of the video ROC-AUC difference noise-floor - baseline in each ablation store (issue 26 §2;
docs/results.md section 5): python docs/scripts/ablation_sd.py ablation-seeds3 ablation-bn ablation-frames
(stores under reports/, made by the commands in suites/covid-blues-ablation.yaml)."""
import sys
import numpy as np
from harness.store import ResultsStore

KEY = ("video", "mean", "roc_auc")


def per_fold(store):
    m = store.metrics()
    m = m[(m.level == KEY[0]) & (m.aggregation == KEY[1]) & (m.metric == KEY[2])]
    return {(r.arm, int(r.fold)): float(r.value) for r in m.itertuples()}


for name in sys.argv[1:]:
    with ResultsStore(f"reports/{name}", readonly=True) as store:
        runs = store.runs(status="done")
        scores = per_fold(store)
        folds = sorted({f for a, f in scores if a == "baseline"} & {f for a, f in scores if a == "noise-floor"})
        d = np.array([scores[("noise-floor", f)] - scores[("baseline", f)] for f in folds])
        base = np.array([scores[("baseline", f)] for f in folds])
        secs = [t.get("run_seconds", 0) for t in runs["timings"]]
        print(f"{name}: {len(folds)} folds; baseline video AUC mean {base.mean():.3f}; diff mean {d.mean():+.3f}, "
              f"per-run SD {d.std(ddof=1):.3f}; run seconds mean {np.mean(secs):.0f}, sum {np.sum(secs) / 3600:.2f} h")
        if "ensemble" in runs and runs["ensemble"].notna().any():
            ens = {(r.arm, int(r.fold)): r.ensemble for r in runs.itertuples()}
            k = ens[("baseline", folds[0])]["n"]
            sds = []
            for j in range(k):
                dj = np.array([ens[("noise-floor", f)]["members"][j]["scores"]["/".join(KEY)]
                               - ens[("baseline", f)]["members"][j]["scores"]["/".join(KEY)] for f in folds])
                sds.append(dj.std(ddof=1))
                print(f"  single networks, member {j}: diff mean {dj.mean():+.3f}, per-run SD {dj.std(ddof=1):.3f}")
            within = [e["member_sd"]["/".join(KEY)] for e in ens.values()]
            print(f"  single-network per-run SD, mean of {k}: {np.mean(sds):.3f}; within-run member SD of the "
                  f"video AUC, mean over {len(within)} runs: {np.mean(within):.3f}")
