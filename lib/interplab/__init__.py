"""InterpLab: what students import. ``from interplab import check`` is all a test cell needs."""
from interplab.checking import CheckFailed, check

__all__ = ["check", "CheckFailed"]
__version__ = "0.1.0"
