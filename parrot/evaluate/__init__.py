"""Evaluation the paper's way: MMMB and multilingual MMBench, scored exactly as VLMEvalKit scores Parrot.

    import parrot
    result = parrot.evaluate(["mmmb_en.tsv", "mmmb_cn.tsv"], "parrot.gguf", "out/")
    print(result.table)

Modules: ``tsv`` (reading VLMEvalKit TSVs), ``prompts`` (the question text), ``extract`` (reply → letter),
``score`` (vanilla / circular scoring, report_acc), ``runner`` (serial, ``--workers``, Ray Data; resumable
journal), ``report`` (table, CSV, JSON, plots), ``cli`` (``parrot eval``).

The package itself is callable, so ``parrot.evaluate(...)`` works whether ``parrot.evaluate`` names this
package or the function re-exported from it.
"""
import sys
import types

from parrot.evaluate.api import EvalResult, evaluate

__all__ = ["evaluate", "EvalResult"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
