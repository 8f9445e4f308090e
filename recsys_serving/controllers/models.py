"""Published models, the served default and the A/B experiment (changes need the admin token)."""

from __future__ import annotations

from litestar import Controller, Request, delete, get, post

from recsys_serving.controllers.deps import (
    Service,
    admin_guard,
    body_doc,
    service_of,
    strict_body,
)
from recsys_serving.schemas import DefaultModelRequest, ExperimentRequest, ModelsResponse


class ModelsController(Controller):
    path = "/api/v1/models"
    tags = ["models"]

    @get("/", summary="Published models with version and metrics")
    async def models(self, service: Service) -> ModelsResponse:
        return await service.models()

    @post(
        "/default",
        status_code=200,
        guards=[admin_guard],
        summary="Switch the default model (admin)",
        dependencies=body_doc(DefaultModelRequest),
    )
    async def set_default(self, request: Request) -> ModelsResponse:
        d = await strict_body(request, DefaultModelRequest)
        return await service_of(request).set_default_model(d.model)


class ExperimentController(Controller):
    path = "/api/v1/experiment"
    tags = ["models"]

    @get("/", summary="The active A/B experiment (null when none)")
    async def get_experiment(self, service: Service) -> ModelsResponse:
        return await service.models()

    @post(
        "/",
        status_code=200,
        guards=[admin_guard],
        summary="Start or change the A/B experiment (admin)",
        dependencies=body_doc(ExperimentRequest),
    )
    async def set_experiment(self, request: Request) -> ModelsResponse:
        d = await strict_body(request, ExperimentRequest)
        exp = {
            "name": d.name,
            "control": d.control,
            "treatment": d.treatment,
            "treatment_share": d.treatment_share,
        }
        return await service_of(request).set_experiment(exp)

    @delete("/", status_code=200, guards=[admin_guard], summary="Drop the admin experiment (admin)")
    async def clear_experiment(self, service: Service) -> ModelsResponse:
        return await service.set_experiment(None)
