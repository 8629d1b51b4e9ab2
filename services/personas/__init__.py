"""Personas written from facts, with held-out probes, for measuring persona fidelity:
Odile (:mod:`.odile`) and the probes of the demo persona Maren (:mod:`.maren`)."""

from services.personas.maren import MAREN_PROBES
from services.personas.odile import ODILE
from services.personas.persona import Fact, Persona, Probe, write_memories

__all__ = ["MAREN_PROBES", "ODILE", "Fact", "Persona", "Probe", "write_memories"]
