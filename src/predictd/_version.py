"""predictd's version, in a module of its own: the client (``predictd.sdk``) reads it too, and the package's
``__init__`` imports the client lazily, so neither has to import the other to know it."""

__version__ = "0.1.0"
