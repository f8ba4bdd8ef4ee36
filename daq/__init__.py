"""The acquisition service: config, acquisition, bus, storage, managed InfluxDB, CLI."""

__version__ = "0.1.0"
