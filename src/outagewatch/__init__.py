"""outagewatch: an open, self-hostable outage tracker."""

__version__ = "0.1.0"
