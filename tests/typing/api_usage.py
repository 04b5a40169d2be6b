"""Type-checked by scripts/typecheck.sh (mypy --strict), never run: what callers write must type-check."""
import numpy as np

import parrot


def usage(model: parrot.Model, img: np.ndarray) -> None:
    text: str = model.generate(img, "What is it?").upper()          # return_details=False: a str
    detailed: parrot.Result = model.generate(img, "What is it?", return_details=True)
    ids: list[int] = detailed.token_ids
    flag = bool(ids)
    either = model.generate(img, "What is it?", return_details=flag)  # a bool: str | Result
    if isinstance(either, parrot.Result):
        either = either.text
    top: str = parrot.generate(img, "What is it?", max_new_tokens=4).lower()
    r: parrot.Result = parrot.generate(img, "What is it?", return_details=True)
    for piece in model.stream(None, "Hi"):
        text += piece
    with parrot.load("m.gguf") as m:
        m.chat(img).ask("Why?").strip()
    print(text, top, r.text, either)
