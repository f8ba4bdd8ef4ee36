"""The rig kinds rigdaq knows: the one listing of them (see :mod:`.kind` for what each declares).

Adding a kind is one module or package next to this one plus a line in :data:`KINDS`.
"""

from __future__ import annotations

from daq.rigs.kind import RigKind
from daq.rigs.logger import KIND as LOGGER
from daq.rigs.screw_press import KIND as SCREW_PRESS
from daq.rigs.srm_rig import KIND as SRM_RIG

__all__ = ["KINDS", "RigKind", "UnknownKindError", "kind_of"]

#: kind name (a rig file's ``kind = "…"``) → its declaration
KINDS: dict[str, RigKind] = {k.name: k for k in (SCREW_PRESS, SRM_RIG, LOGGER)}


class UnknownKindError(ValueError):
    """A rig (or a stored run) names a kind this build does not know."""


def kind_of(rig_or_name) -> RigKind:
    """The declaration of a rig's kind (a rig, or a kind's name); never a fall-through."""
    name = rig_or_name if isinstance(rig_or_name, str) else rig_or_name.kind
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKindError(f"no rig kind {name!r}; kinds are {', '.join(KINDS)}") from None
