"""Special token ids a stock runtime needs: the end ids that stop generation, and the bos id."""
from __future__ import annotations

from pathlib import Path


def _config_ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def end_ids(tokenizer_file: Path, chat_format: str, config: dict, model_dir: Path | None = None) -> list[int]:
    """Every id that ends a reply: the chat format's stop tokens (``<|im_end|>``, ``<|eot_id|>``,
    ``<end_of_turn>``...) that the tokenizer knows, then the config's and generation config's
    ``eos_token_id``. Order kept, repeats dropped; the first is the turn end."""
    import json

    from tokenizers import Tokenizer

    from ..memory.chat import get_format

    tok = Tokenizer.from_file(str(tokenizer_file))
    ids = [tok.token_to_id(t) for t in get_format(chat_format).stop]
    ids += _config_ids(config.get("eos_token_id"))
    gen = Path(model_dir) / "generation_config.json" if model_dir is not None else None
    if gen is not None and gen.is_file():
        ids += _config_ids(json.loads(gen.read_text()).get("eos_token_id"))
    return list(dict.fromkeys(i for i in ids if i is not None))


def bos_id(tokenizer_file: Path, bos_token: str, config: dict) -> int:
    """The config's ``bos_token_id``, else the family's bos token's id, else -1 (none)."""
    if config.get("bos_token_id") is not None:
        return int(_config_ids(config["bos_token_id"])[0])
    from tokenizers import Tokenizer

    found = Tokenizer.from_file(str(tokenizer_file)).token_to_id(bos_token)
    return -1 if found is None else int(found)
