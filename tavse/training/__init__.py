"""Training: the loop, resumable state, schedules and preemption signals."""
