"""The sampler's pure math. Exports load lazily: `schedule` (presets, SampleConfig) needs no torch, so the CLI's
checks and `presets` run before torch is imported; `flow` (the Euler steps) imports it."""

from lumina.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["StepPlan", "euler_step", "guide", "initial_noise", "plan", "shift_time", "time_grid"],
                    "lumina.sampling.flow"),
    **dict.fromkeys(["PRESETS", "SampleConfig", "get_preset", "value_at"], "lumina.sampling.schedule"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
