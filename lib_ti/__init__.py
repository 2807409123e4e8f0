"""TI Trainer: Textual Inversion training for the AUTOMATIC1111 WebUI.

The package is importable without the WebUI; only ``lib_ti.hosts`` (one package per WebUI) touches ``modules``.
"""

__version__ = "0.1.0"
