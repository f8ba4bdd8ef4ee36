"""Pure cycle analysis: arrays and parameters in, typed results out (numpy, scipy)."""
