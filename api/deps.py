"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request

from daq.config import Rig
from daq.service import Service


def get_service(request: Request) -> Service:
    """The running service this app serves."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_rig(service: ServiceDep, rig: Annotated[str, Path(description="rig name, e.g. press-01")]) -> Rig:
    """The rig named in the path, or 404 naming the rigs that exist."""
    found = service.rigs.get(rig)
    if found is None:
        known = ", ".join(sorted(service.rigs)) or "none"
        raise HTTPException(404, f"no rig {rig!r}; rigs are: {known}")
    return found


RigDep = Annotated[Rig, Depends(get_rig)]


def catalogue_of(service: Service):
    """The service's catalogue, or 503 while it is starting."""
    if service.catalogue is None:
        raise HTTPException(503, "the service is still starting: the catalogue is not open yet")
    return service.catalogue
