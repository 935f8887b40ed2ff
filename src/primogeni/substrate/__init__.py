"""The substrate on one machine and its housekeeping: ``primo substrate up/down``, ``primo clean``, ``primo exec``."""
