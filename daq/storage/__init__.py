"""Storage: line protocol, InfluxDB clients, the batching writer."""
