from lumina.sampling.flow import StepPlan, euler_step, guide, initial_noise, plan, shift_time, time_grid
from lumina.sampling.schedule import PRESETS, SampleConfig, get_preset, value_at

__all__ = [
    "PRESETS", "SampleConfig", "StepPlan", "euler_step", "get_preset", "guide", "initial_noise", "plan", "shift_time",
    "time_grid", "value_at",
]
