"""Live data over MQTT: the rigdaq Unified Namespace (UNS) and, optionally, Sparkplug B.

- :mod:`daq.uns.topics` — the topic tree and the JSON payloads (the contract with consumers);
- :mod:`daq.uns.publisher` — :class:`~daq.uns.publisher.MqttPublisher`, an acquisition
  node's bus → broker stage (bounded, never blocks acquisition, reconnects by itself);
- :mod:`daq.uns.subscriber` — :class:`~daq.uns.subscriber.MqttLiveSource`, an API node's
  broker → :class:`daq.live.LiveFeed` source;
- :mod:`daq.uns.sparkplug` — Sparkplug B payloads and the edge-node session
  (``[mqtt] sparkplug = true``).

Importing this package imports none of them (the MQTT client loads only where it is used).
"""
