"""Example models to copy from: run one with ``--model examples.<module>:<Class>``."""
