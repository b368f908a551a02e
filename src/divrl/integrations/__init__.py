"""Adapters that plug :mod:`divrl.core` into external RL frameworks.

Each submodule imports its framework itself, so importing this package needs nothing beyond divrl:

- :mod:`divrl.integrations.trl`: TRL's ``GRPOTrainer`` (install ``divrl[trl]``).
"""
