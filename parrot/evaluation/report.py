"""The results of an evaluation: a printed table, CSV, JSON, per-row predictions and two plots.

matplotlib is imported only when a plot is drawn; without it the plots are skipped with a warning.
"""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from parrot.evaluation.extract import extract_letter
from parrot.evaluation.score import category_names, report_acc, scored_prediction
from parrot.evaluation.tsv import LANGUAGES, Benchmark

Record = Dict[str, Any]  # a JSON-able record (a summary, a scored question, a run's row)

__all__ = ["summarize", "format_table", "write_outputs"]


def _lang_order(langs: Iterable[str]) -> List[str]:
    return sorted(set(langs), key=lambda x: (LANGUAGES.index(x) if x in LANGUAGES else len(LANGUAGES), x))


def summarize(benches: Sequence[Benchmark], scored: Dict[str, List[Record]], records: Dict[Tuple[str, str], Record],
              model: str) -> Record:
    """Everything the reports show, as plain JSON-able data (accuracies are fractions in [0, 1])."""
    out: Dict[str, Any] = {"model": model, "benchmarks": [], "languages": {}, "routing": {}}
    lang_hits: Dict[str, List[int]] = {}
    routing: Dict[str, List[List[float]]] = {}
    for b in benches:
        s = scored[b.name]
        recs = [records.get((b.name, str(r.index))) for r in b.rows]
        out["benchmarks"].append({
            "name": b.name, "path": b.path, "lang": b.lang, "scoring": b.scoring,
            "rows": len(b.rows), "questions": len(s), "correct": sum(e["hit"] for e in s),
            "errors": sum(1 for r in recs if r is not None and r.get("error")),
            "skipped_no_image": b.skipped_no_image, "md5": b.md5, "notes": list(b.notes),
            "accuracy": report_acc(s),
            "l2-category": category_names(s, "l2-category"), "category": category_names(s, "category")})
        lang_hits.setdefault(b.lang, []).extend(e["hit"] for e in s)
        for r in recs:
            if r is not None and r.get("routing"):
                routing.setdefault(b.lang, []).append(r["routing"])
    for lang in _lang_order(lang_hits):
        hits = lang_hits[lang]
        out["languages"][lang] = {"questions": len(hits), "correct": sum(hits),
                                  "accuracy": sum(hits) / len(hits) if hits else float("nan")}
    all_hits = [h for hs in lang_hits.values() for h in hs]
    out["overall"] = {"questions": len(all_hits), "correct": sum(all_hits),
                      "accuracy": sum(all_hits) / len(all_hits) if all_hits else float("nan")}
    for lang in _lang_order(routing):
        rows = [r for r in routing[lang] if len(r) == len(routing[lang][0])]
        out["routing"][lang] = [sum(col) / len(rows) for col in zip(*rows)]
    return out


def _pct(x: float) -> str:
    return "   -" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}"


def format_table(summary: Record) -> str:
    """The accuracy table printed at the end of a run (percentages)."""
    lines = []
    rows = [(b["name"] if sp == "none" else f"{b['name']}/{sp}", b, acc)
            for b in summary["benchmarks"] for sp, acc in b["accuracy"].items()]
    w = max([len(name) for name, _, _ in rows] + [9])
    lines.append(f"{'benchmark':<{w}}  lang  scoring   questions  errors  accuracy")
    for name, b, acc in rows:
        lines.append(f"{name:<{w}}  {b['lang']:<4}  {b['scoring']:<8}  {b['questions']:>9}  {b['errors']:>6}"
                     f"    {_pct(acc['Overall'])}")
    if len(summary["languages"]) > 1 or len(summary["benchmarks"]) > 1:
        lines.append("")
        lines.append("per language: " + "  ".join(f"{k} {_pct(v['accuracy']).strip()}"
                                                  for k, v in summary["languages"].items())
                     + f"  | all {_pct(summary['overall']['accuracy']).strip()}")
    cols = [(b["name"] if sp == "none" else f"{b['name']}/{sp}", acc)
            for b in summary["benchmarks"] for sp, acc in b["accuracy"].items()]
    names: List[str] = []
    for b in summary["benchmarks"]:
        for n in b["l2-category"] + b["category"]:
            if n not in names:
                names.append(n)
    if names:
        cw = max(len(c) for c, _ in cols)
        nw = max(len(n) for n in names + ["Overall"])
        lines.append("")
        lines.append(" " * nw + "  " + "  ".join(f"{c:>{cw}}" for c, _ in cols))
        for n in ["Overall"] + names:
            lines.append(f"{n:<{nw}}  " + "  ".join(f"{_pct(acc.get(n, float('nan'))):>{cw}}" for _, acc in cols))
    t = summary.get("throughput")
    if t:
        lines.append("")
        lines.append(f"rows run {t['rows_run']} in {t['seconds']:.1f} s ({t['rows_per_second']:.2f} rows/s); "
                     f"image cache hits {t['cache_hits']}/{t['cache_lookups']} "
                     f"({100 * t['cache_hit_rate']:.1f}%), {t['seconds_saved']:.1f} s of image encoding saved")
    return "\n".join(lines)


def _write_csv(summary: Record, path: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["benchmark", "lang", "scoring", "split", "group", "name", "accuracy"])
        for b in summary["benchmarks"]:
            for sp, acc in b["accuracy"].items():
                for n, v in acc.items():
                    group = ("overall" if n == "Overall" else "l2-category" if n in b["l2-category"]
                             else "category")
                    w.writerow([b["name"], b["lang"], b["scoring"], sp, group, n, repr(v)])
        for lang, v in summary["languages"].items():
            w.writerow(["*", lang, "", "", "language", lang, repr(v["accuracy"])])
        w.writerow(["*", "*", "", "", "overall", "all", repr(summary["overall"]["accuracy"])])


def _write_predictions(benches: Sequence[Benchmark], scored: Dict[str, List[Record]], records: Dict[Tuple[str, str], Record],
                       path: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "lang", "index", "answer", "raw", "prediction", "extracted", "correct", "hit",
                    "error"])
        for b in benches:
            hits = {str(e["index"]): e["hit"] for e in scored[b.name]}
            for r in b.rows:
                rec = records.get((b.name, str(r.index)), {})
                err = rec.get("error")
                got = None if err or not rec else extract_letter(scored_prediction(rec.get("prediction")), r.options)
                w.writerow([b.name, b.lang, r.index, r.answer, rec.get("raw"), rec.get("prediction"), got,
                            int(got is not None and got == r.answer), hits.get(str(r.index), ""), err or ""])


def _plots(summary: Record, out_dir: str) -> List[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: skipping accuracy.png and routing.png "
                      "(pip install 'parrot-vlm[plot]')", stacklevel=3)
        return []
    written = []
    # accuracy per language, one bar group per benchmark family (the name without its language suffix)
    fams: Dict[str, Dict[str, float]] = {}
    for b in summary["benchmarks"]:
        fam = b["name"][:-3] if b["name"][-3:-2] == "_" else b["name"]
        acc = b["accuracy"][next(iter(b["accuracy"]))]["Overall"]
        if acc is not None:
            fams.setdefault(fam, {})[b["lang"]] = 100 * acc
    langs = _lang_order(l for f in fams.values() for l in f)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 + 0.9 * len(langs) * max(1, len(fams)) ** 0.5), 3.6))
    width = 0.8 / max(1, len(fams))
    for k, (fam, accs) in enumerate(fams.items()):
        xs = [i + (k - (len(fams) - 1) / 2) * width for i, l in enumerate(langs) if l in accs]
        ys = [accs[l] for l in langs if l in accs]
        bars = ax.bar(xs, ys, width, label=fam)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(langs)), langs)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"accuracy per language\n{os.path.basename(summary['model'])}", fontsize=8)
    if len(fams) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    p = os.path.join(out_dir, "accuracy.png")
    fig.savefig(p, dpi=120)
    plt.close(fig)
    written.append(p)

    if summary["routing"]:
        langs = list(summary["routing"])
        mat = [summary["routing"][l] for l in langs]
        n = max(len(r) for r in mat)
        mat = [r + [float("nan")] * (n - len(r)) for r in mat]
        fig, ax = plt.subplots(figsize=(1.5 + 0.7 * n, 1.0 + 0.45 * len(langs)))
        im = ax.imshow(mat, cmap="viridis", aspect="auto")
        ax.set_xticks(range(n), [f"expert {e}" for e in range(n)], fontsize=7)
        ax.set_yticks(range(len(langs)), langs)
        for i, row in enumerate(mat):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(im, ax=ax)
        ax.set_title("mean MoE routing weight per language", fontsize=9)
        fig.tight_layout()
        p = os.path.join(out_dir, "routing.png")
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)
    return written


def write_outputs(summary: Record, benches: Sequence[Benchmark], scored: Dict[str, List[Record]],
                  records: Dict[Tuple[str, str], Record], out_dir: str, *, plots: bool = True) -> Dict[str, str]:
    """Writes accuracy.csv, accuracy.json, predictions.csv and (optionally) the plots; returns their paths."""
    paths = {"csv": os.path.join(out_dir, "accuracy.csv"), "json": os.path.join(out_dir, "accuracy.json"),
             "predictions": os.path.join(out_dir, "predictions.csv")}
    _write_csv(summary, paths["csv"])
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1)
    _write_predictions(benches, scored, records, paths["predictions"])
    if plots:
        for p in _plots(summary, out_dir):
            paths[os.path.splitext(os.path.basename(p))[0]] = p
    return paths
