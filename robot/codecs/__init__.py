"""The protocol seam and the codecs: the words a robot's firmware speaks, no I/O.

A lab's own codec imports the seam from here (``from robot.codecs import LineCodec,
Reply, Sent``); the old path ``robot.codec`` still works and re-exports the same names.
"""

from robot.codecs.loader import CodecLoadError, builtin_codecs, load_codec
from robot.codecs.seam import (
    MAX_LINE,
    REPLY_KINDS,
    CodecError,
    LineCodec,
    Reply,
    Sent,
    invalid,
    stray,
    wire_value,
)

__all__ = ["MAX_LINE", "REPLY_KINDS", "CodecError", "CodecLoadError", "LineCodec", "Reply",
           "Sent", "builtin_codecs", "invalid", "load_codec", "stray", "wire_value"]
