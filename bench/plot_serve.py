"""Plot bench/results/serve.tsv (written by `serve`): each target's measured
value against its bound. Usage: plot_serve.py serve.tsv serve.png"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(tsv, png):
    with open(tsv) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    ratios = [r for r in rows if r["unit"] == "×"]
    memory = [r for r in rows if r["unit"] != "×"]
    fig, axes = plt.subplots(
        2,
        1,
        figsize=(11, 8),
        gridspec_kw={"height_ratios": [max(len(ratios), 1), max(len(memory), 1)]},
    )
    for ax, group, xlabel in (
        (axes[0], ratios, "ratio (time vs nginx; throughput vs zstd CLI)"),
        (axes[1], memory, "MiB"),
    ):
        names = [r["name"] for r in group]
        measured = [float(r["measured"]) for r in group]
        limits = [float(r["limit"]) for r in group]
        ok = [
            (m <= l) if r["bound"] == "at-most" else (m >= l)
            for r, m, l in zip(group, measured, limits)
        ]
        y = range(len(group))
        ax.barh(y, measured, color=["tab:green" if o else "tab:red" for o in ok])
        ax.scatter(limits, y, marker="|", s=400, color="black", zorder=3, label="target")
        cpu = [(i, float(r["cpu"])) for i, r in enumerate(group) if r.get("cpu")]
        if cpu:
            ax.scatter(
                [c for _, c in cpu],
                [i for i, _ in cpu],
                marker="o",
                s=25,
                color="navy",
                zorder=4,
                label="same in server CPU time",
            )
        for i, (m, r) in enumerate(zip(measured, group)):
            sign = "≤" if r["bound"] == "at-most" else "≥"
            right = max([m, float(r["limit"])] + ([float(r["cpu"])] if r.get("cpu") else []))
            label = f"  {m:.2f} ({sign} {float(r['limit']):g})"
            ax.text(right, i, label, va="center", fontsize=8)
        ax.set_yticks(list(y))
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, max(measured + limits + [c for _, c in cpu]) * 1.35)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        "larder-server: wall-time ratio vs target (green met, red missed; | = target)"
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
