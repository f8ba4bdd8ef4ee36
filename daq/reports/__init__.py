"""What a run and its cycles look like outside the service: certificates, plots, plain records.

Shared by the API and the CLI (``daq report``, ``daq keys``), below both:

* :mod:`.records` — runs, cycles, artifacts and a run's sweep table as plain JSON-ready
  dicts (the API's response models are built from them); :func:`~.records.iso`;
* :mod:`.certificate` — a run's certification report: :func:`~.certificate.build_report`
  and its JSON, CSV and PDF renderings (linear in the number of cycles);
* :mod:`.worker` — renders a certificate in a process of its own (the API's way), or here
  (``daq report``), through the one function :func:`~.worker.render_report`;
* :mod:`.plots` — PNGs: a cycle's plot (drawn by its rig kind) and the certificate's
  control chart (I-MR, X̄–R or X̄–S).

Nothing here names a rig kind: what differs between kinds is asked of :mod:`daq.rigs`.
The package's ``__init__`` imports nothing, so ``daq.reports.records`` stays cheap (no
matplotlib, no reportlab).
"""
