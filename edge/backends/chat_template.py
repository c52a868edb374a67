"""Chat templates rendered without transformers: the ONNX build's tokenizer_config.json template
and the GGUF's `tokenizer.chat_template` go through the same jinja2 environment.

The environment mirrors transformers' `apply_chat_template` (sandboxed, trim_blocks,
lstrip_blocks, loopcontrols, `raise_exception`, `strftime_now`, a non-escaping `tojson`, the
`{% generation %}` tag); the caller passes the tokenizer's special tokens (`SPECIAL_KEYS`) in the
context, as transformers does.
"""

from __future__ import annotations

import json
from typing import Any

from globmed_edge.deps import require
from globmed_edge.errors import ModelError

#: The special tokens transformers passes to chat templates.
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def compile_template(source: str) -> Any:
    """A jinja2 template from a chat template's source; ModelError on a syntax error."""
    from datetime import datetime

    jinja2 = require("jinja2", "onnx")
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):  # transformers' assistant-mask tag; renders its body as is
        tags = {"generation"}  # noqa: RUF012

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: (
        json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys))
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ModelError(f"chat template: syntax error ({exc})") from None
