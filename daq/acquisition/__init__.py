"""The acquisition stage: one task per device (or poll group), publishing blocks on the bus.

* :mod:`.transports`: the transports rigdaq speaks, one module each (Modbus TCP/RTU, serial
  streams, OPC UA), and the one listing of them;
* :mod:`.polling`: a device read by a fixed plan of requests (:class:`DeviceAcquisition`);
* :mod:`.stream`: a device that streams numbered frames (:class:`StreamAcquisition`).
"""
