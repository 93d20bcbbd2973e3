"""Plots the soak's resource samples (resident memory, open fds, threads over time) as an SVG, with no plotting
library, and prints each one's growth from the end of the warm-up to the end of the run (goal: under 5 %)."""

import csv
import sys


def main(path, warmup_s, svg_path):
    rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(path))]
    if len(rows) < 2:
        sys.exit("too few samples")
    series = [("rss_kb", "RSS (MiB)", 1 / 1024, "#1f77b4"), ("anon_kb", "anonymous (MiB)", 1 / 1024, "#9467bd"), ("file_kb", "file-backed (MiB)", 1 / 1024, "#8c564b"),
              ("fds", "open fds", 1, "#d62728"), ("threads", "threads", 1, "#2ca02c"),
              ("events", "journal events", 1, "#ff7f0e")]
    series = [s for s in series if s[0] in rows[0]]
    width, height, pad = 900, 220, 50
    t_max = max(r["t_s"] for r in rows) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height * len(series)}" font-family="sans-serif" font-size="12">']
    worst = 0.0
    for i, (key, label, scale, colour) in enumerate(series):
        vals = [r[key] * scale for r in rows]
        top = max(vals) * 1.1 or 1
        y0 = i * height
        pts = " ".join(f"{pad + (r['t_s'] / t_max) * (width - 2 * pad):.1f},{y0 + height - pad - (v / top) * (height - 2 * pad):.1f}"
                       for r, v in zip(rows, vals))
        wx = pad + (warmup_s / t_max) * (width - 2 * pad)
        after = [v for r, v in zip(rows, vals) if r["t_s"] >= warmup_s] or vals
        growth = (after[-1] - after[0]) / after[0] * 100 if after[0] else 0.0
        # The goal is on RSS, fds and threads; the anonymous and file-backed parts of RSS and the journal's length
        # are there to explain the RSS line.
        if key in ("rss_kb", "fds", "threads"):
            worst = max(worst, growth)
        parts += [
            f'<text x="{pad}" y="{y0 + 20}">{label}: {after[0]:.1f} at warm-up end, {after[-1]:.1f} at the end ({growth:+.1f} %)</text>',
            f'<line x1="{pad}" y1="{y0 + height - pad}" x2="{width - pad}" y2="{y0 + height - pad}" stroke="#888"/>',
            f'<line x1="{pad}" y1="{y0 + pad}" x2="{pad}" y2="{y0 + height - pad}" stroke="#888"/>',
            f'<text x="{pad - 5}" y="{y0 + pad + 4}" text-anchor="end">{top:.0f}</text>',
            f'<text x="{pad - 5}" y="{y0 + height - pad + 4}" text-anchor="end">0</text>',
            f'<text x="{width - pad}" y="{y0 + height - pad + 16}" text-anchor="end">{t_max:.0f} s</text>',
            f'<line x1="{wx:.1f}" y1="{y0 + pad}" x2="{wx:.1f}" y2="{y0 + height - pad}" stroke="#bbb" stroke-dasharray="4"/>',
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>',
        ]
        print(f"{label:10} {after[0]:10.1f} -> {after[-1]:10.1f}  ({growth:+.1f} % after warm-up)")
    parts.append("</svg>")
    open(svg_path, "w").write("\n".join(parts))
    print(f"plot: {svg_path}; largest growth of RSS, fds and threads after warm-up {worst:+.1f} % (goal under 5 %)")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
