"""parrot: fast CPU inference for Parrot, the multilingual vision-language model (arXiv:2406.02539).

    import parrot
    parrot.generate("cat.jpg", "What is in the picture?")        # the default (shipped) model
    model = parrot.load("parrot.gguf")                          # or a Hugging Face Parrot directory
    for piece in model.stream("cat.jpg", "Что на картинке?"):
        print(piece, end="", flush=True)
"""
from parrot.errors import ImageError, ModelError, ParrotError, TokenizerError
from parrot.cache import ImageCacheInfo
from parrot.chat import ChatSession
from parrot.generation import Result
from parrot.model import DEFAULT_SYSTEM, IMAGE_TOKEN, Model, default_model, generate, load
from parrot.sampling import SamplingOptions
from parrot.converter import convert
from parrot import evaluate  # the package is callable: parrot.evaluate(files, model, out_dir, ...)

__version__ = "0.1.0"
__all__ = ["load", "generate", "default_model", "Model", "Result", "ChatSession", "ImageCacheInfo",
           "SamplingOptions", "convert", "evaluate", "IMAGE_TOKEN", "DEFAULT_SYSTEM", "ModelError", "ImageError",
           "TokenizerError", "ParrotError", "__version__"]
