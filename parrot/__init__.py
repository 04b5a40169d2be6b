"""parrot: fast CPU inference for Parrot, the multilingual vision-language model (arXiv:2406.02539).

    import parrot
    model = parrot.load("parrot.gguf")
"""
from parrot.errors import ImageError, ModelError, ParrotError, TokenizerError
from parrot.model import IMAGE_TOKEN, Model, load
from parrot.converter import convert

__version__ = "0.1.0"
__all__ = ["load", "Model", "convert", "IMAGE_TOKEN", "ModelError", "ImageError", "TokenizerError",
           "ParrotError", "__version__"]
