"""Evaluation the paper's way: MMMB and multilingual MMBench, scored exactly as VLMEvalKit scores Parrot.

    import parrot
    result = parrot.evaluate(["mmmb_en.tsv", "mmmb_cn.tsv"], "parrot.gguf", "out/")
    print(result.table)

Modules: ``tsv`` (reading VLMEvalKit TSVs), ``prompts`` (the question text), ``extract`` (reply → letter),
``score`` (vanilla / circular scoring, report_acc), ``runner`` (serial, ``--workers``, Ray Data; resumable
journal), ``report`` (table, CSV, JSON, plots), ``cli`` (``parrot eval``).

``parrot.evaluate`` is the function :func:`parrot.evaluation.api.evaluate`; this package holds its parts.
"""
from parrot.evaluation.api import EvalResult, evaluate

__all__ = ["evaluate", "EvalResult"]
