"""The kind of noise each DEMAND environment holds: ``stationary``, ``transient`` or ``babble``.

One table for the real DEMAND recordings and the synthetic ones alike (the generators in
:mod:`tavse.synth.noise` are written to match it). The judgement, per environment, is what
dominates the recording and therefore what an enhancer has to cope with:

- ``stationary``: a steady or slowly varying floor (engines, machines, HVAC, wind, water,
  traffic rumble with cars passing over seconds); whatever events occur sit well under it.
  DWASHING, NFIELD, NRIVER, OOFFICE, STRAFFIC, TBUS, TCAR, TMETRO.
- ``transient``: a quiet floor broken by short, distinct events (dishes, footsteps, doors,
  bird calls, a distant TV voice now and then) that a slowly adapting noise estimate misses.
  DKITCHEN, DLIVING, NPARK, OHALLWAY.
- ``babble``: several overlapping talkers dominate: competing speech, the hardest case for
  a speech enhancer. OMEETING, PCAFETER, PRESTO, PSTATION, SCAFE, SPSQUARE.

Light on purpose (no imports): evaluation and data code may read it without pulling in audio I/O.
"""

from __future__ import annotations

__all__ = ["DEMAND_ENVIRONMENTS", "KINDS", "NOISE_KINDS", "kind_of"]

KINDS: tuple[str, ...] = ("stationary", "transient", "babble")

NOISE_KINDS: dict[str, str] = {
    "DKITCHEN": "transient",
    "DLIVING": "transient",
    "DWASHING": "stationary",
    "NFIELD": "stationary",
    "NPARK": "transient",
    "NRIVER": "stationary",
    "OHALLWAY": "transient",
    "OMEETING": "babble",
    "OOFFICE": "stationary",
    "PCAFETER": "babble",
    "PRESTO": "babble",
    "PSTATION": "babble",
    "SCAFE": "babble",
    "SPSQUARE": "babble",
    "STRAFFIC": "stationary",
    "TBUS": "stationary",
    "TCAR": "stationary",
    "TMETRO": "stationary",
}

DEMAND_ENVIRONMENTS: tuple[str, ...] = tuple(NOISE_KINDS)  # all 18, alphabetical (SCAFE only at 48 kHz)


def kind_of(env: str) -> str:
    """The noise kind of DEMAND environment ``env``; ValueError naming it when it has none."""
    try:
        return NOISE_KINDS[env]
    except KeyError:
        raise ValueError(
            f"environment {env!r} has no known noise kind (stationary/transient/babble); known: "
            f"{', '.join(sorted(NOISE_KINDS))} (tavse/corpus/noise_kinds.py: NOISE_KINDS)"
        ) from None
