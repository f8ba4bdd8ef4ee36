"""Alarms operators acknowledge: the ISA-18.2 lifecycle, kept small.

* :mod:`.model`: an alarm and its states (:class:`~daq.alarms.model.Alarm`), the transitions;
* :mod:`.stage`: the service's alarm stage, which raises and clears alarms from its sources
  and files them in the catalogue through the catalogue writer (and its outbox);
* :mod:`.webhook`: the optional webhook told of new alarms, on its own task.

Sources, keys and priorities:

=================  ===============================  ========  =====================================
source             key                              priority  clears when
=================  ===============================  ========  =====================================
``verdict``        ``verdict:<rig>``                medium    the rig's next ``ok`` verdict (an event
                                                              alarm: a NOK blow or step raises it)
``device``         ``device:<rig>/<device>``        high      the device is ``ok`` again (down, or a
                   (down) / medium (stale)                    heartbeat that stopped: stale)
``storage``        ``storage:<node>``               high      InfluxDB takes writes and the spool's
                                                              disk works again
``spool``          ``spool:<node>``                 medium    the spool is back below its alarm level
``calibration``    ``calibration:<rig>/<device>.    low       the rig file carries a new calibration
                   <channel>``                      (medium
                                                    overdue)
=================  ===============================  ========  =====================================

The same condition is one alarm: one open (not ``cleared``) alarm per key.
"""
