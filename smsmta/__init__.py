"""smsmta: the kernel the services share (settings, database, observability, CLI)."""

__version__ = "0.1.0"
