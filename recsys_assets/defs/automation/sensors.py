"""The sensor that evaluates the automation conditions, running as soon as the daemon starts."""

from dagster import AutomationConditionSensorDefinition, DefaultSensorStatus

from recsys_assets.defs.automation.conditions import AUTOMATED

# Running by default: with `make dev` (webserver + daemon) a new day of events in the raw folder
# reaches Redis with no click. 30 s between ticks: a tick is cheap, a refresh takes minutes.
automation_sensor = AutomationConditionSensorDefinition(
    "recsys_automation",
    target=AUTOMATED,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Refreshes splits, models, metrics, reports and serving_bundle when inputs change.",
)
