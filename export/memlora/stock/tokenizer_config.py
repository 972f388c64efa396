"""``tokenizer_config.json`` beside every ``tokenizer.json`` a stock runtime reads.

ONNX Runtime GenAI's tokenizer (onnxruntime-extensions) needs it to pick the tokenizer class and
its special tokens; Hugging Face and ExecuTorch's HF tokenizer read bos/eos from it. Started from
the source model's own file when it has one (so ``tokenizer_class`` and friends stay right), else
built from the family; either way the special tokens and the chat template are memlora's chat
format, so ``apply_chat_template`` renders what ``memlora.memory.chat.render_chat`` renders.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..memory.chat import ChatFormat, get_format

FILE = "tokenizer_config.json"


def chat_template(fmt: ChatFormat) -> str:
    """A Jinja chat template equal to ``render_chat(fmt.name, messages, add_generation_prompt)``
    (written for HF's environment: ``trim_blocks`` and ``lstrip_blocks`` change nothing here)."""
    def lit(text: str) -> str:  # a Jinja string literal
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"

    head, _, tail = fmt.turn.partition("{content}")
    role_prefix, _, role_suffix = head.partition("{role}")
    roles = "{" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in sorted(fmt.role_names.items())) + "}"
    fold = "false" if fmt.system_role else "true"
    return (
        "{% set ns = namespace(sys='') %}"
        f"{{{{ {lit(fmt.bos)} }}}}"
        "{% for m in messages %}"
        f"{{% if m['role'] == 'system' and {fold} %}}{{% set ns.sys = m['content'] + '\\n\\n' %}}"
        "{% else %}"
        f"{{{{ {lit(role_prefix)} + {roles}.get(m['role'], m['role']) + {lit(role_suffix)} + ns.sys "
        f"+ m['content'] + {lit(tail)} }}}}{{% set ns.sys = '' %}}"
        "{% endif %}{% endfor %}"
        f"{{% if ns.sys %}}{{{{ {lit(role_prefix)} + 'user' + {lit(role_suffix)} + ns.sys[:-2] + {lit(tail)} }}}}{{% endif %}}"
        f"{{% if add_generation_prompt %}}{{{{ {lit(fmt.generation)} }}}}{{% endif %}}"
    )


def tokenizer_config(info, context: int) -> dict:
    """The file's content for a model (``memlora.model_io.ModelInfo``) and context length."""
    fmt = get_format(info.family.chat_format)
    src = Path(info.path) / FILE
    doc = json.loads(src.read_text()) if src.is_file() else {"tokenizer_class": "PreTrainedTokenizerFast"}
    doc.update({
        "bos_token": fmt.bos or None,
        "eos_token": fmt.stop[0],
        "pad_token": info.family.pad,
        "add_bos_token": False,  # the rendered prompt carries its bos marker as text (num_bos = 0)
        "add_eos_token": False,
        "model_max_length": int(context),
        "chat_template": chat_template(fmt),
        "memlora": "special tokens and chat template from memlora's chat format " + fmt.name,
    })
    return doc


def write_tokenizer_config(folder: Path, info, context: int) -> str:
    """Write ``folder/tokenizer_config.json``; returns its name."""
    (Path(folder) / FILE).write_text(json.dumps(tokenizer_config(info, context), indent=2, ensure_ascii=False) + "\n")
    return FILE
