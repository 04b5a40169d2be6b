"""Scoring predictions: vanilla (MMMB) and circular (MMBench), and VLMEvalKit's accuracy report.

Sources, all in VLMEvalKit:
* ``ImageMCQDataset.evaluate`` (vlmeval/dataset/image_mcq.py): predictions are read back as ``str(x)`` of a
  saved sheet, so an empty prediction is scored as the text "nan"; circular when the dataset name contains
  "mmbench" or "ccbench" (decided in tsv.load_benchmark).
* ``mcq_vanilla_eval`` / ``eval_vanilla`` (vlmeval/dataset/utils/multiple_choice.py): a row is right when
  ``can_infer(prediction, choices)`` equals its ``answer``.
* ``mcq_circular_eval`` / ``prefetch_circular_group``: rows with index ``i >= 1_000_000`` are rotations of
  row ``i % 1_000_000``; a main row is right only when every row of its group has an inferable letter equal
  to its answer (without a judge, a group that prefetching cannot settle scores 0). Accuracy is over main rows.
* ``report_acc``: per split (sorted here; "none" without a ``split`` column), "Overall", then each
  ``l2-category`` and each ``category`` in sorted order, MMBench's long names abbreviated (``MMB_abbrs``).

Rows whose image could not be used (errors) count as wrong and are reported separately; rows whose
``category`` is missing count in "Overall" only.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional

from parrot.evaluation.extract import extract_letter
from parrot.evaluation.tsv import Benchmark, Row

__all__ = ["CIRCULAR_BASE", "MMB_ABBRS", "scored_prediction", "score_rows", "report_acc"]

CIRCULAR_BASE = 1_000_000

MMB_ABBRS = {
    "coarse_perception": "CP",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
    "attribute_reasoning": "AR",
}


def scored_prediction(prediction: Optional[str]) -> str:
    """The prediction text VLMEvalKit scores: what it reads back from its results sheet, where an empty
    cell comes back as NaN and is then turned into the string "nan"."""
    return "nan" if prediction is None or prediction == "" else prediction


def score_rows(bench: Benchmark, records: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One scored entry per question (main row): its fields, extracted letters and ``hit`` (0/1).

    ``records`` maps ``str(row.index)`` to the run record of that row (``prediction``, ``error``).
    """
    def letter(row: Row) -> Optional[str]:
        rec = records.get(str(row.index))
        if rec is None or rec.get("error"):
            return None
        return extract_letter(scored_prediction(rec.get("prediction")), row.options)

    def entry(row: Row, hit: int, letters: List[Optional[str]], members: List[Row]) -> Dict[str, Any]:
        errs = [records.get(str(m.index), {}).get("error") for m in members]
        return {"index": row.index, "answer": row.answer, "category": row.category,
                "l2-category": row.l2_category, "split": row.split, "hit": hit,
                "extracted": letters[0], "rotations": len(members),
                "error": next((e for e in errs if e), None)}

    out = []
    if bench.scoring == "vanilla":
        for row in bench.rows:
            got = letter(row)
            out.append(entry(row, int(got is not None and got == row.answer), [got], [row]))
        return out

    def number(row: Row) -> int:
        if not isinstance(row.index, int):
            raise ValueError(f"{bench.path}: circular scoring needs integer indices, got {row.index!r}")
        return row.index

    groups: "OrderedDict[int, List[Row]]" = OrderedDict()
    main = [r for r in bench.rows if number(r) < CIRCULAR_BASE]
    for r in main:
        groups[number(r)] = []
    for r in bench.rows:
        g = number(r) % CIRCULAR_BASE
        if g in groups:
            groups[g].append(r)
    for r in main:
        members = groups[number(r)]
        letters = [letter(m) for m in members]
        hit = int(all(got is not None and got == m.answer for got, m in zip(letters, members)))
        out.append(entry(r, hit, letters, members))
    return out


def _mean(xs: List[int]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def report_acc(scored: Iterable[Dict[str, Any]]) -> "OrderedDict[str, OrderedDict[str, float]]":
    """``{split: {"Overall": acc, <l2-category>...: acc, <category>...: acc}}`` as report_acc orders it."""
    scored = list(scored)
    splits = sorted({e["split"] for e in scored if e["split"] is not None}) or ["none"]
    has_split = any(e["split"] is not None for e in scored)
    res: "OrderedDict[str, OrderedDict[str, float]]" = OrderedDict()
    for sp in splits:
        rows = [e for e in scored if (e["split"] == sp if has_split else True)]
        acc: "OrderedDict[str, float]" = OrderedDict()
        acc["Overall"] = _mean([e["hit"] for e in rows])
        for group in ("l2-category", "category"):
            names = sorted({e[group] for e in scored if e[group] is not None})
            for name in names:
                acc[MMB_ABBRS.get(name, name)] = _mean([e["hit"] for e in rows if e[group] == name])
        res[sp] = acc
    return res


def category_names(scored: Iterable[Dict[str, Any]], group: str) -> List[str]:
    return [MMB_ABBRS.get(n, n) for n in sorted({e[group] for e in scored if e[group] is not None})]
