"""The catalogue stage: runs, cycles, archived samples, run artifacts and API keys in SQL.

* :mod:`.store`: the database (:class:`Catalogue`, SQLAlchemy Core, SQLite by default);
* :mod:`.writer`: files results from the bus on the catalogue's own thread (:class:`CatalogueWriter`),
  through an on-disk :mod:`.outbox` while the database is unavailable;
* :mod:`.runs`: runs started and stopped with their metadata (:class:`RunManager`);
* :mod:`.keys`: API keys, stored hashed, and their roles.
"""

from daq.catalogue.store import Catalogue, RunRow
from daq.catalogue.writer import CatalogueWriter

__all__ = ["Catalogue", "CatalogueWriter", "RunRow"]
