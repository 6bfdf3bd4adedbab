"""Which codec ``--robot-protocol`` names: a built-in (``json``, ``text``) or a lab's
own ``package.module:ClassName``, checked before the link starts.

The registry lives here, above the seam and the built-ins, so that neither of them
imports the other's module back.
"""

from __future__ import annotations

import importlib

from i18n import CodedError
from robot.codecs.json_codec import JsonCodec
from robot.codecs.seam import LineCodec
from robot.codecs.text_codec import TextCodec

_REQUIRED = ("encode_command", "encode_stop", "decode")
_DOC = "docs/robot-adapters.md"


def builtin_codecs() -> dict[str, type[LineCodec]]:
    return {"json": JsonCodec, "text": TextCodec}


class CodecLoadError(CodedError):
    """Why ``--robot-protocol`` cannot be used: a code (text at ``error.<code>``, one
    line); ``str()`` is English."""


def load_codec(spec: str) -> LineCodec:
    """A codec from a built-in name (``json``, ``text``) or ``package.module:ClassName``.

    Raises CodecLoadError with one line naming what is wrong.
    """
    builtins = builtin_codecs()
    if spec in builtins:
        return builtins[spec]()
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise CodecLoadError("codec_unknown", {"spec": repr(spec), "builtins": ", ".join(builtins),
                                               "form": "package.module:ClassName"})
    named = {"spec": spec, "module": module_name, "cls": class_name, "doc": _DOC}
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing the lab's module is its own
        raise CodecLoadError("codec_import_failed",
                             {**named, "error": f"{type(exc).__name__}: {exc}"}) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise CodecLoadError("codec_class_missing", named)
    if not (isinstance(cls, type) and issubclass(cls, LineCodec)):
        raise CodecLoadError("codec_not_a_codec", {**named, "base": "robot.codecs.LineCodec"})
    missing = [name for name in _REQUIRED if getattr(cls, name) is getattr(LineCodec, name)]
    if missing:
        raise CodecLoadError("codec_incomplete", {**named, "missing": ", ".join(missing)})
    try:
        codec = cls()
    except Exception as exc:  # the lab's constructor: report whatever it raised
        raise CodecLoadError("codec_init_failed",
                             {**named, "error": f"{type(exc).__name__}: {exc}"}) from None
    if not isinstance(codec.uses_ids, bool):
        raise CodecLoadError("codec_uses_ids", {**named, "attr": f"{class_name}.uses_ids",
                                                "yes": "True", "no": "False"})
    return codec
