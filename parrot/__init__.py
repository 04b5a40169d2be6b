"""parrot: fast CPU inference for Parrot, the multilingual vision-language model (arXiv:2406.02539).

    import parrot
    parrot.generate("cat.jpg", "What is in the picture?")        # the default (shipped) model
    with parrot.load("parrot.gguf") as model:                   # or a Hugging Face Parrot directory
        for piece in model.stream("cat.jpg", "Что на картинке?"):
            print(piece, end="", flush=True)

The library prints nothing: it reports through the ``parrot`` logger (:mod:`logging`), warns through
:mod:`warnings`, and shows tqdm progress bars on stderr only where a ``progress=`` argument (on by default)
asks for one.
"""
import logging as _logging

from parrot.errors import ImageError, ModelError, ParrotError, TokenizerError
from parrot.cache import ImageCacheInfo, PrefixCacheInfo
from parrot.chat import ChatSession
from parrot.generation import Generation, Result
from parrot.model import DEFAULT_SYSTEM, IMAGE_TOKEN, Model, default_model, generate, load
from parrot.sampling import SamplingOptions
from parrot.converter import convert
from parrot.evaluation import evaluate

_logging.getLogger("parrot").addHandler(_logging.NullHandler())

__version__ = "0.1.0"
__all__ = ["load", "generate", "default_model", "Model", "Result", "Generation", "ChatSession", "ImageCacheInfo",
           "PrefixCacheInfo", "SamplingOptions", "convert", "evaluate", "IMAGE_TOKEN", "DEFAULT_SYSTEM",
           "ModelError", "ImageError", "TokenizerError", "ParrotError", "__version__"]
