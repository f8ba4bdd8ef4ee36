"""Simulated equipment: physics models that speak the real wire protocols."""
