"""Which codec ``--robot-protocol`` names: a built-in (``json``, ``text``) or a lab's
own ``package.module:ClassName``, checked before the link starts.

The registry lives here, above the seam and the built-ins, so that neither of them
imports the other's module back.
"""

from __future__ import annotations

import importlib

from robot.codecs.json_codec import JsonCodec
from robot.codecs.seam import LineCodec
from robot.codecs.text_codec import TextCodec

_REQUIRED = ("encode_command", "encode_stop", "decode")


def builtin_codecs() -> dict[str, type[LineCodec]]:
    return {"json": JsonCodec, "text": TextCodec}


class CodecLoadError(Exception):
    """One line saying why ``--robot-protocol`` cannot be used."""


def load_codec(spec: str) -> LineCodec:
    """A codec from a built-in name (``json``, ``text``) or ``package.module:ClassName``.

    Raises CodecLoadError with one line naming what is wrong.
    """
    builtins = builtin_codecs()
    if spec in builtins:
        return builtins[spec]()
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise CodecLoadError(f"unknown robot protocol {spec!r}: use one of "
                             f"{', '.join(builtins)} or package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing the lab's module is its own
        raise CodecLoadError(f"robot protocol {spec}: cannot import {module_name} "
                             f"({type(exc).__name__}: {exc})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise CodecLoadError(f"robot protocol {spec}: module {module_name} has no "
                             f"{class_name}")
    if not (isinstance(cls, type) and issubclass(cls, LineCodec)):
        raise CodecLoadError(f"robot protocol {spec}: {class_name} is not a subclass of "
                             "robot.codecs.LineCodec (see docs/robot-adapters.md)")
    missing = [name for name in _REQUIRED if getattr(cls, name) is getattr(LineCodec, name)]
    if missing:
        raise CodecLoadError(f"robot protocol {spec}: {class_name} does not implement "
                             f"{', '.join(missing)} (see docs/robot-adapters.md)")
    try:
        codec = cls()
    except Exception as exc:  # the lab's constructor: report whatever it raised
        raise CodecLoadError(f"robot protocol {spec}: {class_name}() failed "
                             f"({type(exc).__name__}: {exc})") from None
    if not isinstance(codec.uses_ids, bool):
        raise CodecLoadError(f"robot protocol {spec}: {class_name}.uses_ids must be "
                             "True or False")
    return codec
