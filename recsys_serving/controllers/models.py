"""Published models, the served default and the A/B experiment (changes need the admin token)."""

from __future__ import annotations

from litestar import Controller, Request, delete, get, post

from recsys_serving.controllers.deps import ADMIN_ERRORS, admin_guard, errors, service_of
from recsys_serving.schemas import DefaultModelRequest, ExperimentRequest, ModelsResponse


class ModelsController(Controller):
    path = "/api/v1/models"
    tags = ["models"]

    @get("/", summary="Published models with version and metrics", responses=errors(503))
    async def models(self, request: Request) -> ModelsResponse:
        return await service_of(request).models()

    @post(
        "/default",
        status_code=200,
        guards=[admin_guard],
        summary="Switch the default model (admin)",
        responses=errors(*ADMIN_ERRORS, 404, 503),
    )
    async def set_default(self, data: DefaultModelRequest, request: Request) -> ModelsResponse:
        return await service_of(request).set_default_model(data.model)


class ExperimentController(Controller):
    path = "/api/v1/experiment"
    tags = ["models"]

    @get("/", summary="The active A/B experiment (null when none)", responses=errors(503))
    async def get_experiment(self, request: Request) -> ModelsResponse:
        return await service_of(request).models()

    @post(
        "/",
        status_code=200,
        guards=[admin_guard],
        summary="Start or change the A/B experiment (admin)",
        responses=errors(*ADMIN_ERRORS, 404, 503),
    )
    async def set_experiment(self, data: ExperimentRequest, request: Request) -> ModelsResponse:
        service = service_of(request)
        exp = {
            "name": data.name,
            "control": data.control,
            "treatment": data.treatment,
            "treatment_share": data.treatment_share,
        }
        return await service.set_experiment(exp)

    @delete(
        "/",
        status_code=200,
        guards=[admin_guard],
        summary="Drop the admin experiment (admin)",
        responses=errors(*ADMIN_ERRORS, 503),
    )
    async def clear_experiment(self, request: Request) -> ModelsResponse:
        return await service_of(request).set_experiment(None)
