from lumina.sampling.flow import StepPlan, euler_step, guide, initial_noise, plan, shift_time, time_grid
from lumina.sampling.schedule import (
    PRESETS,
    SampleConfig,
    coerce_setting,
    format_schedule,
    get_preset,
    parse_schedule_string,
    resolve_sample_config,
    value_at,
)

__all__ = [
    "PRESETS", "SampleConfig", "coerce_setting", "StepPlan", "euler_step", "format_schedule", "get_preset", "guide", "initial_noise", "plan",
    "parse_schedule_string", "resolve_sample_config", "shift_time", "time_grid", "value_at",
]
