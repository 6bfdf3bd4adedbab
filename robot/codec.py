"""The seam's old import path, kept for labs' codecs written against it: prefer robot.codecs."""

from robot.codecs import *  # noqa: F403  (the same names, one re-export)
